//! Waiting for something a test cannot be told about directly (a background task's effect, a
//! child process's state): poll a condition until it holds, within a bound.

/// Polls `check` every 50 ms for at most 10 s; panics naming `what` when it never holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

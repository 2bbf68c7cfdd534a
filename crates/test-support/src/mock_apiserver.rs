//! Helpers for tests that play the kube-apiserver (none can run here) behind kube's mock
//! service (tower-test): JSON and `Status` answers in the API server's shapes, reading a
//! request's JSON body, and a kube client whose every request goes to a handler.

use std::future::Future;

use kube::client::Body;
use serde_json::{Value, json};

/// A JSON answer with `code`.
pub fn json_response(code: u16, body: &Value) -> http::Response<Body> {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// A failure `Status` as the API server sends it (kube maps it to `Error::Api`).
pub fn status_response(code: u16, reason: &str, message: &str) -> http::Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

/// A request's JSON body (`Null` when it has none or it is not JSON).
pub async fn json_body(request: http::Request<Body>) -> Value {
    let bytes = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// A kube client (default namespace `namespace`) whose requests `handler` answers, one after
/// the other, until the returned task is aborted or the client dropped.
pub fn client<F, Fut>(namespace: &str, handler: F) -> (kube::Client, tokio::task::JoinHandle<()>)
where
    F: Fn(http::Request<Body>) -> Fut + Send + 'static,
    Fut: Future<Output = http::Response<Body>> + Send,
{
    crate::install_crypto_provider();
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let server = tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            respond.send_response(handler(request).await);
        }
    });
    (kube::Client::new(service, namespace), server)
}

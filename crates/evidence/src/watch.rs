//! File watching for hot reloads (configuration, policies, TLS certificate and key).
//!
//! The parent directories are watched rather than the files: Kubernetes updates mounted
//! ConfigMaps and Secrets by swapping a `..data` symlink, which never touches the file paths
//! themselves. Bursts of events are coalesced; callers compare contents before reloading.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long to wait for a burst of file events (write key, then cert) to settle.
pub const SETTLE: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    pub path: PathBuf,
    #[source]
    pub source: notify::Error,
}

/// Change notifications for a set of files. Dropping it stops the watch.
#[derive(Debug)]
pub struct FileChanges {
    _watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
}

impl FileChanges {
    /// Watches the directories holding `files`.
    pub fn watch<'a>(files: impl IntoIterator<Item = &'a Path>) -> Result<Self, WatchError> {
        Self::watch_with_trees(files, [])
    }

    /// Watches the directories holding `files`, and every directory under each of `trees`
    /// (policy folders, where a file may be added, changed or removed at any depth).
    pub fn watch_with_trees<'a>(
        files: impl IntoIterator<Item = &'a Path>,
        trees: impl IntoIterator<Item = &'a Path>,
    ) -> Result<Self, WatchError> {
        let (sender, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    // The receiver is gone only when the watch is being dropped.
                    let _ = sender.send(());
                }
            })
            .map_err(|source| WatchError {
                path: PathBuf::new(),
                source,
            })?;
        let mut watched: Vec<PathBuf> = Vec::new();
        for file in files {
            let dir = match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            };
            if watched.contains(&dir) {
                continue;
            }
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError {
                    path: dir.clone(),
                    source,
                })?;
            watched.push(dir);
        }
        for tree in trees {
            watcher
                .watch(tree, RecursiveMode::Recursive)
                .map_err(|source| WatchError {
                    path: tree.to_owned(),
                    source,
                })?;
        }
        Ok(Self {
            _watcher: watcher,
            events,
        })
    }

    /// Waits for the next change, then for the burst to settle. `None` when the watch ended.
    pub async fn next(&mut self) -> Option<()> {
        self.events.recv().await?;
        loop {
            match tokio::time::timeout(SETTLE, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) | Err(_) => return Some(()),
            }
        }
    }
}

//! A watched directory of Trivy JSON reports: new reports are picked up without a restart.
//! The report format itself is parsed by `portcullis_core::scan::trivy`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use portcullis_core::scan::trivy::{TrivyError, parse};
use portcullis_core::scan::{ScanReport, ScanSource};

use crate::watch::FileChanges;

/// The reports of one directory, indexed by digest (the newest per digest).
#[derive(Debug)]
pub struct TrivyDirectory {
    directory: PathBuf,
    index: ArcSwap<HashMap<String, Arc<ScanReport>>>,
}

impl TrivyDirectory {
    /// Reads every `*.json` report in `directory`. Unreadable or foreign files are skipped with
    /// a warning (returned too), so one bad file never hides the others.
    pub fn open(directory: PathBuf) -> Result<(Arc<Self>, Vec<TrivyError>), TrivyError> {
        let source = Arc::new(Self {
            directory,
            index: ArcSwap::from_pointee(HashMap::new()),
        });
        let problems = source.reload()?;
        Ok((source, problems))
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Re-reads the directory; the new index replaces the old one at once.
    pub fn reload(&self) -> Result<Vec<TrivyError>, TrivyError> {
        let entries = std::fs::read_dir(&self.directory).map_err(|source| TrivyError::Read {
            path: self.directory.clone(),
            source,
        })?;
        let mut index: HashMap<String, Arc<ScanReport>> = HashMap::new();
        let mut problems = Vec::new();
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json") && path.is_file())
            .collect();
        paths.sort();
        for path in paths {
            let parsed = std::fs::read(&path)
                .map_err(|source| TrivyError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|bytes| parse(&bytes, &path));
            match parsed {
                Ok(reports) => {
                    for report in reports {
                        let newer = index
                            .get(&report.digest)
                            .is_none_or(|known| known.scanned_at < report.scanned_at);
                        if newer {
                            index.insert(report.digest.clone(), Arc::new(report));
                        }
                    }
                }
                Err(problem) => {
                    tracing::warn!(error = %problem, "skipping a Trivy report");
                    problems.push(problem);
                }
            }
        }
        tracing::info!(directory = %self.directory.display(), digests = index.len(), "Trivy reports loaded");
        self.index.store(Arc::new(index));
        Ok(problems)
    }

    /// Reloads whenever the directory changes, until the returned task is aborted.
    pub fn watch(
        self: &Arc<Self>,
    ) -> Result<tokio::task::JoinHandle<()>, crate::watch::WatchError> {
        // FileChanges watches the parent of each file it is given: name a file inside.
        let mut changes = FileChanges::watch([self.directory.join("report.json").as_path()])?;
        let source = self.clone();
        Ok(tokio::spawn(async move {
            while changes.next().await.is_some() {
                if let Err(err) = source.reload() {
                    tracing::error!(error = %err, "cannot reload Trivy reports; keeping the previous ones");
                }
            }
        }))
    }
}

impl ScanSource for TrivyDirectory {
    fn lookup(&self, digest: &str) -> Option<Arc<ScanReport>> {
        self.index.load().get(digest).cloned()
    }
}

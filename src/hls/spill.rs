//! `hls.memory_segments`: segments of the window older than the newest few are written to files
//! and served from there, so a stream's HLS memory is its newest segments, not its window.
//!
//! Files live in `<hls.directory>/spill/<uuid>/<msn>.m4s`, private to the gateway (the disk
//! mirror is the public copy; with the mirror on, nothing is spilled). A segment leaves memory
//! only once its file is written; a write that fails or a full queue leaves it in memory.
//! Writing and deleting happen on this task, off the media path, through a short queue.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::store::Store;

enum Job {
    Write(u64, Vec<Bytes>),
    Delete(PathBuf),
}

pub struct Spiller {
    keep: usize,
    tx: mpsc::Sender<Job>,
}

impl Spiller {
    /// Starts the writer of one stream; empties what an earlier run left.
    pub fn start(
        id: Uuid,
        directory: &str,
        keep: usize,
        store: Arc<Store>,
        cancel: CancellationToken,
    ) -> Spiller {
        let (tx, rx) = mpsc::channel(16);
        let dir = Path::new(directory)
            .join("spill")
            .join(id.hyphenated().to_string());
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = write_loop(dir.clone(), store, rx) => {}
            }
            let _ = tokio::fs::remove_dir_all(&dir).await;
        });
        Spiller { keep, tx }
    }

    /// Queues what the window has to write out and to delete.
    pub fn update(&self, store: &Store) {
        let (jobs, garbage) = {
            let mut w = store.lock();
            (w.spill_jobs(self.keep), w.take_garbage())
        };
        for path in garbage {
            if let Err(mpsc::error::TrySendError::Full(Job::Delete(path))) =
                self.tx.try_send(Job::Delete(path))
            {
                tokio::spawn(async move {
                    let _ = tokio::fs::remove_file(path).await;
                });
            }
        }
        for (msn, chunks) in jobs {
            if self.tx.try_send(Job::Write(msn, chunks)).is_err() {
                store.lock().spill_failed(msn);
            }
        }
    }
}

async fn write_loop(dir: PathBuf, store: Arc<Store>, mut rx: mpsc::Receiver<Job>) {
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let mut warned = false;
    let ready = tokio::fs::create_dir_all(&dir).await;
    while let Some(job) = rx.recv().await {
        match job {
            Job::Delete(path) => {
                let _ = tokio::fs::remove_file(path).await;
            }
            Job::Write(msn, chunks) => {
                let path = dir.join(format!("{msn}.m4s"));
                let written = match &ready {
                    Ok(()) => write(&path, &chunks).await,
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                };
                match written {
                    Ok(()) => {
                        if !store.lock().spilled(msn, path.clone()) {
                            let _ = tokio::fs::remove_file(&path).await;
                        }
                    }
                    Err(e) => {
                        if !warned {
                            warn!(dir = %dir.display(), error = %e, "cannot write HLS segments out; keeping them in memory");
                            warned = true;
                        }
                        let _ = tokio::fs::remove_file(&path).await;
                        store.lock().spill_failed(msn);
                    }
                }
            }
        }
    }
}

async fn write(path: &Path, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut f = tokio::fs::File::create(path).await?;
    for c in chunks {
        f.write_all(c).await?;
    }
    f.flush().await
}

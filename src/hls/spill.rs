//! `hls.memory_ms`: the parts of a watched stream's HLS window older than its newest
//! `memory_ms` of media are appended to one file per segment and served from there, so a
//! stream's HLS memory is a couple of seconds of parts (themselves mostly the GOP cache's own
//! frame buffers), not its window: with the original's 10 s segments a window is 80 s of video.
//!
//! Files live in `<hls.directory>/spill/<uuid>/<msn>.m4s`, private to the gateway (the disk
//! mirror is the public copy; with the mirror on, nothing is spilled). A part leaves memory
//! only once it is written; a write that fails or a full queue leaves it in memory (and the
//! file is cut back to what is known to be in it). Writing and deleting happen on this task,
//! off the media path, through a short queue.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::store::{SpillJob, Store};

/// Parts written per job at least (fewer, larger writes: about a second of 200 ms parts).
const BATCH_PARTS: usize = 5;

enum Job {
    Write(SpillJob),
    Delete(PathBuf),
}

pub struct Spiller {
    /// Parts kept in memory.
    keep: usize,
    tx: mpsc::Sender<Job>,
}

impl Spiller {
    /// Starts the writer of one stream; empties what an earlier run left. `keep` parts (the
    /// newest) stay in memory.
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
            (w.spill_jobs(self.keep, BATCH_PARTS), w.take_garbage())
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
        for job in jobs {
            let msn = job.msn;
            if self.tx.try_send(Job::Write(job)).is_err() {
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
            Job::Write(job) => {
                let path = dir.join(format!("{}.m4s", job.msn));
                let (msn, upto) = (job.msn, job.first + job.chunks.len());
                let written = match &ready {
                    Ok(()) => append(&path, job).await,
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                };
                match written {
                    Ok(()) => {
                        if !store.lock().spilled(msn, upto, path.clone()) {
                            let _ = tokio::fs::remove_file(&path).await;
                        }
                    }
                    Err(e) => {
                        if !warned {
                            warn!(dir = %dir.display(), error = %e, "cannot write HLS parts out; keeping them in memory");
                            warned = true;
                        }
                        store.lock().spill_failed(msn);
                    }
                }
            }
        }
    }
}

/// Writes a job's parts at its offset (cutting off whatever a failed write left after it), in
/// one trip to the blocking pool: opening, cutting and a write per chunk as plain system calls
/// there, not a pool round trip each (a part is a `moof` and a buffer per frame).
async fn append(path: &Path, job: SpillJob) -> std::io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || append_blocking(&path, &job))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn append_blocking(path: &Path, job: &SpillJob) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(job.offset == 0)
        .open(path)?;
    f.set_len(job.offset)?;
    f.seek(std::io::SeekFrom::Start(job.offset))?;
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, f);
    for part in &job.chunks {
        for c in part {
            w.write_all(c)?;
        }
    }
    w.flush()
}

//! The upload spool: closed files of S3 streams wait in their local directory until they are
//! in the bucket. Uploads are retried with backoff for as long as it takes (an S3 outage of
//! an hour loses nothing), a local file is deleted only after the stored size was checked, and
//! after a restart the directory listing puts every file that is still local back in the queue.
//!
//! The queue holds names, not media: its size is bounded by the files on disk.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::index::Location;
use super::StreamArchive;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Files waiting for upload, oldest first.
#[derive(Default)]
pub struct Uploader {
    queue: Mutex<VecDeque<(Arc<StreamArchive>, i64)>>,
    wake: Notify,
}

/// The backlog, for status and metrics.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Backlog {
    pub files: usize,
    pub bytes: u64,
    /// Start of the oldest file waiting, Unix ms.
    pub oldest_start_ms: Option<i64>,
}

impl Uploader {
    pub fn enqueue(&self, stream: Arc<StreamArchive>, name_s: i64) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back((stream, name_s));
        }
        self.wake.notify_one();
    }

    /// The backlog of each stream.
    /// Files waiting for upload (the one being uploaded included).
    pub fn pending(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.len())
    }

    pub fn backlog_by_stream(&self) -> std::collections::HashMap<uuid::Uuid, Backlog> {
        let queued: Vec<(Arc<StreamArchive>, i64)> = self
            .queue
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        let mut out: std::collections::HashMap<uuid::Uuid, Backlog> = Default::default();
        for (sa, name_s) in queued {
            let Some(seg) = sa.segment(name_s).filter(|s| s.location == Location::Local) else {
                continue;
            };
            let b = out.entry(sa.id).or_default();
            b.files += 1;
            b.bytes += seg.bytes;
            b.oldest_start_ms = Some(
                b.oldest_start_ms
                    .map_or(seg.start_ms, |t| t.min(seg.start_ms)),
            );
        }
        out
    }

    fn front(&self) -> Option<(Arc<StreamArchive>, i64)> {
        self.queue.lock().ok()?.front().cloned()
    }

    fn pop_front(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.pop_front();
        }
    }

    /// Uploads until `cancel` fires. One file at a time, in order; a failure waits (1 s
    /// doubling to 30 s) and retries the same file, so an outage costs nothing but time.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut failing = false;
        loop {
            let Some((stream, name_s)) = self.front() else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.wake.notified() => continue,
                }
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = upload_one(&stream, name_s) => r,
            };
            match result {
                Ok(()) => {
                    if failing {
                        info!("S3 uploads work again");
                    }
                    failing = false;
                    backoff = BACKOFF_MIN;
                    self.pop_front();
                }
                Err(e) => {
                    if !failing {
                        warn!(stream = %stream.id, "upload failed, will retry until it works: {e}");
                    }
                    failing = true;
                    stream.status.error(&e.to_string());
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Uploads one spooled file, records it, deletes the local copy.
async fn upload_one(stream: &Arc<StreamArchive>, name_s: i64) -> Result<(), super::s3::S3Error> {
    let Some(s3) = stream.s3.as_ref() else {
        return Ok(());
    };
    // Deleted by retention meanwhile, or already uploaded: nothing to do.
    match stream.segment(name_s) {
        Some(seg) if seg.location == Location::Local => {}
        _ => return Ok(()),
    }
    let name = super::index::file_name(&stream.id, name_s);
    let path = stream.dir.join(&name);
    s3.upload(&path, &name).await?;
    stream.uploaded(name_s);
    stream.publish_bucket_index().await;
    if let Err(e) = tokio::fs::remove_file(&path).await {
        warn!("uploaded {name} but cannot delete the local copy: {e}");
    }
    Ok(())
}

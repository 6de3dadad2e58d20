//! The optional disk copy of a stream's HLS window (`hls.mirror_to_disk`): the plain playlist,
//! init segments and complete segments under `hls.directory`, for a web server or a tool that
//! wants files. Written off the media path by its own task through a short queue; each file is
//! written to a temporary name and renamed, and segments that left the window are deleted.
//! A full queue skips an update (the next one carries everything), so a slow disk never holds
//! back live video.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::store::Window;

/// What the directory should hold now.
struct Job {
    /// (file name, bytes), playlist last.
    files: Vec<(String, Vec<Bytes>)>,
}

pub struct Mirror {
    tx: mpsc::Sender<Job>,
}

impl Mirror {
    pub fn start(id: Uuid, dir: &str, cancel: CancellationToken) -> Mirror {
        let (tx, rx) = mpsc::channel(2);
        let dir = PathBuf::from(dir);
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = write_loop(id, dir, rx) => {}
            }
        });
        Mirror { tx }
    }

    /// Queues the window's current files.
    pub fn update(&self, w: &Window) {
        let mut files = w.files();
        files.push((format!("{}.m3u8", w.name()), vec![w.playlist_plain()]));
        if self.tx.try_send(Job { files }).is_err() {
            warn!("HLS disk mirror is behind; skipping one update");
        }
    }
}

async fn write_loop(id: Uuid, dir: PathBuf, mut rx: mpsc::Receiver<Job>) {
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        warn!(dir = %dir.display(), error = %e, "cannot create the HLS directory; not mirroring");
        return;
    }
    let prefix = id.hyphenated().to_string();
    let mut written: HashSet<String> = HashSet::new();
    // Files of an earlier run of this stream would be listed by nobody: remove them.
    remove_stale(&dir, &prefix, &HashSet::new()).await;
    while let Some(job) = rx.recv().await {
        let keep: HashSet<String> = job.files.iter().map(|(n, _)| n.clone()).collect();
        for (name, chunks) in job.files {
            let is_playlist = name.ends_with(".m3u8");
            if !is_playlist && written.contains(&name) {
                continue;
            }
            if let Err(e) = write_atomic(&dir, &name, &chunks).await {
                warn!(file = %name, error = %e, "HLS mirror write failed");
                continue;
            }
            written.insert(name);
        }
        written.retain(|n| keep.contains(n));
        remove_stale(&dir, &prefix, &keep).await;
    }
}

async fn write_atomic(dir: &Path, name: &str, chunks: &[Bytes]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut data = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        data.extend_from_slice(c);
    }
    tokio::fs::write(&tmp, &data).await?;
    tokio::fs::rename(&tmp, dir.join(name)).await
}

/// Deletes this stream's media files that `keep` does not name.
async fn remove_stale(dir: &Path, prefix: &str, keep: &HashSet<String>) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(prefix)
            && (name.ends_with(".m4s") || name.ends_with(".mp4") || name.ends_with(".m3u8"));
        if ours && !keep.contains(&name) {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}

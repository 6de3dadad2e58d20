//! `hls.memory_ms`: the parts of a watched stream's HLS window older than its newest
//! `memory_ms` of media are appended to one file per segment and served from there, so a
//! stream's HLS memory is a couple of seconds of parts (themselves mostly the GOP cache's own
//! frame buffers), not its window: with the original's 10 s segments a window is 80 s of video.
//!
//! Files live in `<hls.directory>/spill/<uuid>/<msn>.m4s`, private to the gateway (the disk
//! mirror is the public copy; with the mirror on, nothing is spilled). A part leaves memory
//! only once it is written; a write that fails or a full queue leaves it in memory (to be
//! written again over whatever the failed write left). Writing and deleting happen on this
//! task, off the media path, through a short queue; [`read`] serves a request from a file.
//!
//! The file of a segment that left the window is not deleted but renamed to a spare name, then
//! to the next segment's name, and written over: its pages stay in the page cache and are
//! reused, where a new file takes fresh pages for every byte (in a virtual machine that hands
//! free memory back to its host, several times the cost of the copy; docs/benchmarks.md,
//! "The page cache"). A complete
//! segment's file is cut to its length with its last parts; until then bytes past what the
//! window knows are in the file are never read. A request that opened a file just before it
//! was renamed checks, once it has read, that the name still is that file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::store::{Media, SpillJob, Store};

/// Parts written per job at least (fewer, larger writes: about a second of 200 ms parts).
const BATCH_PARTS: usize = 5;
/// Files of segments that left the window kept to be written over; a segment leaves as the
/// next one starts, so one is usually enough.
const SPARE_FILES: usize = 2;

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
    let (mut spare, mut spared): (Vec<PathBuf>, u64) = (Vec::new(), 0);
    while let Some(job) = rx.recv().await {
        match job {
            Job::Delete(path) if spare.len() < SPARE_FILES => {
                // Out of the name at once: a request for the segment finds nothing.
                let to = dir.join(format!(".spare-{spared}"));
                spared += 1;
                match tokio::fs::rename(&path, &to).await {
                    Ok(()) => spare.push(to),
                    Err(_) => {
                        let _ = tokio::fs::remove_file(path).await;
                    }
                }
            }
            Job::Delete(path) => {
                let _ = tokio::fs::remove_file(path).await;
            }
            Job::Write(job) => {
                let path = dir.join(format!("{}.m4s", job.msn));
                let (msn, upto) = (job.msn, job.first + job.chunks.len());
                let reuse = if job.offset == 0 { spare.pop() } else { None };
                let written = match &ready {
                    Ok(()) => write(&path, reuse, job).await,
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

/// Writes a job's parts at its offset into `path` (first renamed from `reuse`, a spare file,
/// when given) in one trip to the blocking pool: renaming, opening and one gathered write of
/// every chunk (a part is a `moof` and a buffer per frame) as plain system calls there, not a
/// pool round trip each.
async fn write(path: &Path, reuse: Option<PathBuf>, job: SpillJob) -> std::io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_blocking(&path, reuse, &job))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn write_blocking(path: &Path, reuse: Option<PathBuf>, job: &SpillJob) -> std::io::Result<()> {
    use std::io::{IoSlice, Seek, Write};
    if let Some(old) = reuse {
        if std::fs::rename(&old, path).is_err() {
            let _ = std::fs::remove_file(&old);
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    f.seek(std::io::SeekFrom::Start(job.offset))?;
    // The chunks as they are, gathered by the kernel: no buffer to fill (a fresh one per job
    // cost a page fault per 4 KiB and a copy of every byte).
    let mut slices: Vec<IoSlice<'_>> = job
        .chunks
        .iter()
        .flatten()
        .map(|c| IoSlice::new(c))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    match job.end {
        // What a longer segment left in a file written over goes (a pass over a file that
        // already ends there changes nothing).
        Some(end) => f.set_len(end),
        None => Ok(()),
    }
}

/// The bytes of a segment or part: shared from memory, or read from its file (then the
/// newest parts from memory). `None` when the file went away or became another segment's
/// meanwhile (the segment left the window).
pub async fn read(media: Media) -> Option<Vec<Bytes>> {
    match media {
        Media::Memory(chunks) => Some(chunks),
        Media::File {
            path,
            offset,
            len,
            tail,
        } => {
            let len = usize::try_from(len).ok()?;
            let head = tokio::task::spawn_blocking(move || read_blocking(&path, offset, len))
                .await
                .ok()??;
            let mut out = Vec::with_capacity(1 + tail.len());
            out.push(Bytes::from(head));
            out.extend(tail);
            Some(out)
        }
    }
}

fn read_blocking(path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    read_opened(&std::fs::File::open(path).ok()?, path, offset, len)
}

/// Reads from `f`, opened as `path`: `None` if `path` is another file by the time the bytes
/// are read (renamed away, maybe written over, while we read: not ours).
fn read_opened(f: &std::fs::File, path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::MetadataExt;
    // Read into spare capacity: not zeroed first (a segment's head is megabytes).
    let mut buf = Vec::with_capacity(len);
    let mut r = f;
    r.seek(std::io::SeekFrom::Start(offset)).ok()?;
    r.take(len as u64).read_to_end(&mut buf).ok()?;
    if buf.len() != len {
        return None;
    }
    let (ours, now) = (f.metadata().ok()?, std::fs::metadata(path).ok()?);
    (ours.ino() == now.ino() && ours.dev() == now.dev()).then_some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn job(msn: u64, offset: u64, bytes: &[u8], end: Option<u64>) -> SpillJob {
        SpillJob {
            msn,
            first: 0,
            offset,
            // Two parts, the second of two chunks: what a `moof` and its frames look like.
            chunks: vec![
                vec![Bytes::copy_from_slice(&bytes[..1])],
                vec![
                    Bytes::copy_from_slice(&bytes[1..bytes.len() / 2]),
                    Bytes::copy_from_slice(&bytes[bytes.len() / 2..]),
                ],
            ],
            end,
        }
    }

    #[test]
    fn the_next_segment_is_written_over_a_spare_file_and_cut_to_its_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new, spare) = (
            dir.path().join("0.m4s"),
            dir.path().join("1.m4s"),
            dir.path().join(".spare-0"),
        );
        let a: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        write_blocking(&old, None, &job(0, 0, &a[..2000], None)).expect("write");
        write_blocking(&old, None, &job(0, 2000, &a[2000..], Some(3000))).expect("append");
        assert_eq!(std::fs::read(&old).expect("read"), a);
        let inode = std::fs::metadata(&old).expect("stat").ino();
        std::fs::rename(&old, &spare).expect("spare");

        // The next, shorter segment goes into the same file: first its head (the old tail is
        // still there, and never read), then its last parts, which cut the file to its length.
        let b: Vec<u8> = (0..1700u32).map(|i| (i % 13) as u8 + 100).collect();
        write_blocking(&new, Some(spare.clone()), &job(1, 0, &b[..1000], None)).expect("reuse");
        assert_eq!(std::fs::metadata(&new).expect("stat").ino(), inode);
        assert!(!spare.exists() && !old.exists());
        assert_eq!(read_blocking(&new, 0, 1000).as_deref(), Some(&b[..1000]));
        assert_eq!(std::fs::metadata(&new).expect("stat").len(), 3000);
        write_blocking(&new, None, &job(1, 1000, &b[1000..], Some(1700))).expect("end");
        assert_eq!(std::fs::read(&new).expect("read"), b);
        assert_eq!(read_blocking(&old, 0, 10), None, "the old name is gone");
    }

    #[test]
    fn a_read_of_a_file_renamed_meanwhile_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new) = (dir.path().join("0.m4s"), dir.path().join("1.m4s"));
        write_blocking(&old, None, &job(0, 0, &[1u8; 100], Some(100))).expect("write");
        let opened = std::fs::File::open(&old).expect("open");
        assert_eq!(read_opened(&opened, &old, 0, 100), Some(vec![1u8; 100]));
        // Renamed to the next segment's name and written over between open and read.
        write_blocking(&new, Some(old.clone()), &job(1, 0, &[2u8; 100], Some(100))).expect("reuse");
        assert_eq!(read_opened(&opened, &old, 0, 100), None);
        assert_eq!(read_blocking(&new, 0, 100), Some(vec![2u8; 100]));
        // Not a file read past its end either.
        assert_eq!(read_blocking(&new, 50, 100), None);
    }
}

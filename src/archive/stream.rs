//! One stream's archive: where its files are, its index, the file being written, and what its
//! recorder reports. Reads and deletes go through here, wherever the bytes are (disk or S3).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::warn;
use uuid::Uuid;

use super::index::{self, Location, Segment, StreamIndex};
use super::journal::Journal;
use super::s3::S3Store;
use super::{file, upload, StorageError};
use crate::events::Event;
use crate::mp4::movie::Movie;

/// What a recorder reports.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StatusInner {
    /// Name seconds of the file being written.
    pub writing: Option<i64>,
    pub files_written: u64,
    pub bytes_written: u64,
    pub frames_lost_lagging: u64,
    pub last_error: Option<String>,
    pub deleted_files: u64,
    pub deleted_bytes: u64,
}

impl Status {
    fn with(&self, f: impl FnOnce(&mut StatusInner)) {
        if let Ok(mut s) = self.inner.lock() {
            f(&mut s);
        }
    }

    pub fn set_writing(&self, name_s: Option<i64>) {
        self.with(|s| s.writing = name_s);
    }

    pub fn error(&self, message: &str) {
        self.with(|s| s.last_error = Some(message.to_owned()));
    }

    pub fn lagged(&self, frames: u64) {
        self.with(|s| s.frames_lost_lagging += frames);
    }

    pub fn snapshot(&self) -> StatusInner {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One stream's archive storage and index.
pub struct StreamArchive {
    pub id: Uuid,
    /// The stream's own archive settings (`None` for the global serving directory).
    pub settings: Option<crate::config::StreamArchiveConfig>,
    /// The stream's files (filesystem), or its upload spool (S3).
    pub dir: PathBuf,
    pub s3: Option<S3Store>,
    pub ms_per_file: i64,
    pub fragment_ms: i64,
    pub max_age_s: Option<u64>,
    pub max_bytes: Option<u64>,
    pub recording: bool,
    pub status: Status,
    pub(super) journal: Journal,
    pub(super) index: Mutex<StreamIndex>,
    /// Wakes retention when a file is closed (cheap: planning stops at the first file kept).
    pub(super) retention: Arc<tokio::sync::Notify>,
    pub(super) events: Arc<dyn crate::events::EventSink>,
    /// The file being written, as far as it is written (not in the index until closed).
    pub(super) growing: Mutex<Option<Segment>>,
    pub(super) uploader: Arc<upload::Uploader>,
    /// Unix ms of the last re-read of the bucket (fleet nodes that do not record a camera).
    pub(super) refreshed_ms: std::sync::atomic::AtomicI64,
    /// In a fleet, until this Unix ms (two minutes after this node started recording the
    /// camera) the bucket is re-read before the index object is written: the previous owner
    /// may still be uploading its last files, whose facts must not be written over.
    pub(super) merge_until_ms: std::sync::atomic::AtomicI64,
    /// In a fleet, no file is named before this Unix second: a node that takes a camera over
    /// starts recording from its GOP cache, which can begin in the same second as the previous
    /// owner's last file, and that name (an S3 key) must not be written twice. The real start
    /// stays in the index (`start_ms`).
    pub(super) name_floor_s: std::sync::atomic::AtomicI64,
    /// Its thumbnails (`thumbs`).
    pub(super) thumbs: Mutex<super::thumbs::Known>,
}

impl StreamArchive {
    fn index(&self) -> std::sync::MutexGuard<'_, StreamIndex> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the index under its lock.
    pub fn with_index<T>(&self, f: impl FnOnce(&StreamIndex) -> T) -> T {
        f(&self.index())
    }

    /// The name of the stream's index object in the bucket: what its recorders knew of each
    /// uploaded file (real start, duration, end reason), journal lines, so that every node
    /// of a fleet serves the files of every owner with their facts.
    pub fn bucket_index_name(&self) -> String {
        format!("{}.index.jsonl", self.id)
    }

    /// The facts of the bucket's index object (empty when there is none).
    pub async fn bucket_facts(
        &self,
    ) -> Result<std::collections::HashMap<i64, Segment>, StorageError> {
        let Some(s3) = &self.s3 else {
            return Ok(Default::default());
        };
        Ok(match s3.get_if_exists(&self.bucket_index_name()).await? {
            Some(b) => super::journal::replay(&String::from_utf8_lossy(&b)),
            None => Default::default(),
        })
    }

    /// Writes the bucket's index object from what this node knows of the uploaded files (its
    /// own, and those of earlier owners it read from the bucket). The owner calls it after
    /// each upload; a failure is logged and the next upload writes it again.
    pub async fn publish_bucket_index(&self) {
        let Some(s3) = &self.s3 else {
            return;
        };
        // Merge what the bucket says first when another node may have written it: just after
        // a takeover, or when no recorder runs here (a file left in the spool uploaded late).
        let merge_until = self
            .merge_until_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let recording_here = self.status.snapshot().writing.is_some();
        if crate::media::unix_ms_now() < merge_until || !recording_here {
            if let Err(e) = self.refresh().await {
                warn!(stream = %self.id, "cannot re-read the bucket before writing its index: {e}");
            }
        }
        let remote: Vec<Segment> = self.with_index(|i| {
            i.segments()
                .iter()
                .filter(|s| s.location == Location::Remote)
                .cloned()
                .collect()
        });
        let text = super::journal::render(&remote);
        if let Err(e) = s3
            .put_bytes(
                &self.bucket_index_name(),
                text.as_bytes(),
                "application/x-ndjson",
            )
            .await
        {
            warn!(stream = %self.id, "cannot write the bucket's index object: {e}");
        }
    }

    /// Adds the files other nodes put in the bucket since the index was built (S3 streams in
    /// a fleet), with the facts of the bucket's index object where it has them; how many.
    pub async fn refresh(&self) -> Result<usize, StorageError> {
        let Some(s3) = &self.s3 else {
            return Ok(0);
        };
        let objects = s3.list(&self.id.to_string()).await?;
        let facts = self.bucket_facts().await.unwrap_or_default();
        self.refreshed_ms.store(
            crate::media::unix_ms_now(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut added = 0;
        let mut idx = self.index();
        for o in objects {
            let Some(name_s) = o
                .key
                .rsplit('/')
                .next()
                .and_then(|n| index::parse_file_name(&self.id, n))
            else {
                continue;
            };
            let known = idx.get(name_s).cloned();
            let fact = facts.get(&name_s).filter(|f| f.bytes == o.size);
            match (known, fact) {
                (None, _) => {
                    let mut seg = fact.cloned().unwrap_or_else(|| {
                        super::startup::nominal(name_s, self.ms_per_file, o.size)
                    });
                    seg.location = Location::Remote;
                    idx.insert(seg);
                    added += 1;
                }
                // Known by name only until now: the facts replace the nominal entry.
                (Some(k), Some(f)) if k.end == super::index::EndReason::Unknown && *f != k => {
                    let mut seg = f.clone();
                    seg.location = Location::Remote;
                    idx.remove(name_s);
                    idx.insert(seg);
                }
                _ => {}
            }
        }
        Ok(added)
    }

    /// [`refresh`](Self::refresh) if the last one is older than `max_age_ms`.
    pub async fn refresh_if_older(&self, max_age_ms: i64) {
        let last = self.refreshed_ms.load(std::sync::atomic::Ordering::Relaxed);
        if self.s3.is_some() && crate::media::unix_ms_now() - last > max_age_ms {
            if let Err(e) = self.refresh().await {
                warn!(stream = %self.id, "cannot re-read the bucket: {e}");
            }
        }
    }

    /// Sets why the newest file ended when that was not known (see
    /// [`StreamIndex::mark_last_end`]), in the index and the journal.
    pub fn mark_last_end(&self, end: super::index::EndReason) {
        let changed = self.index().mark_last_end(end);
        if let Some(seg) = changed {
            if let Err(e) = self.journal.closed(&seg) {
                warn!("cannot append to the archive journal: {e}");
            }
        }
    }

    pub fn segment(&self, name_s: i64) -> Option<Segment> {
        self.index()
            .get(name_s)
            .cloned()
            .or_else(|| self.growing().filter(|g| g.name_s == name_s))
    }

    /// The file being written, with its duration so far.
    pub fn growing(&self) -> Option<Segment> {
        self.growing.lock().ok()?.clone()
    }

    pub(crate) fn set_growing(&self, seg: Option<Segment>) {
        if let Ok(mut g) = self.growing.lock() {
            *g = seg;
        }
    }

    /// Segments overlapping `[start_ms, end_ms)`, including the file being written.
    pub fn view(&self, start_ms: i64, end_ms: i64) -> Vec<Segment> {
        let mut out = self.index().overlapping(start_ms, end_ms).to_vec();
        if let Some(g) = self.growing() {
            if g.start_ms < end_ms
                && g.end_ms() > start_ms
                && out.iter().all(|s| s.name_s != g.name_s)
            {
                out.push(g);
            }
        }
        out
    }

    /// The first segment overlapping `[start_ms, end_ms)` that sorts after `after` (start,
    /// name), the file being written included: playback's next file, found without copying
    /// the window.
    pub fn next_segment(
        &self,
        start_ms: i64,
        end_ms: i64,
        after: Option<(i64, i64)>,
    ) -> Option<Segment> {
        let key = |s: &Segment| (s.start_ms, s.name_s);
        let later = |s: &Segment| after.is_none_or(|a| key(s) > a);
        let indexed = {
            let index = self.index();
            let window = index.overlapping(start_ms, end_ms);
            let from = window.partition_point(|s| !later(s));
            window.get(from).cloned()
        };
        let growing = self
            .growing()
            .filter(|g| g.start_ms < end_ms && g.end_ms() > start_ms && later(g));
        match (indexed, growing) {
            (Some(i), Some(g)) if key(&g) < key(&i) => Some(g),
            (Some(i), _) => Some(i),
            (None, g) => g,
        }
    }

    /// Continuous stretches, including the file being written.
    pub fn spans(&self, tolerance_ms: i64) -> Vec<index::Span> {
        let mut spans = self.index().spans(tolerance_ms);
        if let Some(g) = self.growing() {
            match spans.last_mut() {
                Some(last) if g.start_ms <= last.end_ms + tolerance_ms => {
                    last.end_ms = last.end_ms.max(g.end_ms());
                }
                _ => spans.push(index::Span {
                    start_ms: g.start_ms,
                    end_ms: g.end_ms(),
                }),
            }
        }
        spans
    }

    /// A name for a file starting at `start_ms` that no other file of the stream has, and no
    /// earlier than the floor a fleet takeover set (see [`StreamArchive::name_floor_s`]).
    pub fn free_name(&self, start_ms: i64) -> i64 {
        let floor_s = self.name_floor_s.load(std::sync::atomic::Ordering::Relaxed);
        self.index()
            .free_name(start_ms.max(floor_s.saturating_mul(1000)))
    }

    /// A file was closed: index it, journal it, queue its upload.
    pub fn closed(self: &Arc<Self>, seg: Segment) {
        if let Err(e) = self.journal.closed(&seg) {
            warn!("cannot append to the archive journal: {e}");
        }
        self.status.with(|s| {
            s.files_written += 1;
            s.bytes_written += seg.bytes;
        });
        let name_s = seg.name_s;
        self.events.emit(
            Some(&self.id),
            Event::SegmentClosed {
                file: seg.file_name(&self.id),
                start_ms: seg.start_ms,
                duration_ms: seg.duration_ms,
                bytes: seg.bytes,
                end_reason: serde_json::json!(seg.end),
            },
        );
        // Indexed before it stops being the growing file: a request in between finds it.
        self.index().insert(seg);
        self.set_growing(None);
        if self.s3.is_some() {
            self.uploader.enqueue(Arc::clone(self), name_s);
        }
        self.retention.notify_one();
    }

    pub(super) fn uploaded(&self, name_s: i64) {
        if let Some(s3) = &self.s3 {
            let name = index::file_name(&self.id, name_s);
            let key = s3.key(&name);
            self.events
                .emit(Some(&self.id), Event::UploadDone { file: name, key });
        }
        self.index().set_location(name_s, Location::Remote);
        if let Err(e) = self.journal.moved(name_s, Location::Remote) {
            warn!("cannot append to the archive journal: {e}");
        }
    }

    /// Deletes a segment wherever it is; returns its size.
    pub async fn delete(&self, name_s: i64) -> Result<u64, StorageError> {
        let Some(seg) = self.segment(name_s) else {
            return Ok(0);
        };
        let name = seg.file_name(&self.id);
        match (seg.location, &self.s3) {
            (Location::Remote, Some(s3)) => s3.delete(&name).await?,
            _ => match tokio::fs::remove_file(self.dir.join(&name)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&name)(e)),
            },
        }
        self.index().remove(name_s);
        if let Err(e) = self.journal.deleted(name_s) {
            warn!("cannot append to the archive journal: {e}");
        }
        self.status.with(|s| {
            s.deleted_files += 1;
            s.deleted_bytes += seg.bytes;
        });
        Ok(seg.bytes)
    }

    /// Reads a segment's bytes from wherever it is.
    pub async fn read(&self, seg: &Segment) -> Result<Bytes, StorageError> {
        let name = seg.file_name(&self.id);
        match (seg.location, &self.s3) {
            (Location::Remote, Some(s3)) => Ok(s3.get(&name).await?),
            _ => {
                let mut path = self.dir.join(&name);
                if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                    // Still being written.
                    let part = file::part_path(&self.dir, &name, seg.start_ms);
                    if tokio::fs::try_exists(&part).await.unwrap_or(false) {
                        path = part;
                    }
                }
                let len = tokio::fs::metadata(&path)
                    .await
                    .map_err(StorageError::io(&name))?
                    .len();
                if len > crate::mp4::movie::MAX_FILE_BYTES {
                    return Err(StorageError::TooBig { name, len });
                }
                let data = tokio::fs::read(&path)
                    .await
                    .map(Bytes::from)
                    .map_err(StorageError::io(&name))?;
                // A file being written may end in half a fragment: keep whole fragments only.
                let whole = crate::mp4::movie::whole_fragments_len(&data)
                    .unwrap_or_else(|| crate::mp4::movie::top_level_boxes(&data).1);
                Ok(data.slice(..whole))
            }
        }
    }

    /// Reads and demuxes a segment from wherever it is.
    pub async fn open(&self, seg: &Segment) -> Result<Movie, StorageError> {
        let bytes = self.read(seg).await?;
        Movie::parse(bytes).map_err(|source| StorageError::Unreadable {
            name: seg.file_name(&self.id),
            source,
        })
    }
}

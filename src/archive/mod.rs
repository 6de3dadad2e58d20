//! The archive: recording streams into MP4 files on disk or S3, and serving them back.
//!
//! Belongs here: the recorder (a hub consumer), the file format on disk, the per-stream index
//! and its sidecar journal, storage backends (a directory; an S3 bucket behind a local upload
//! spool), retention, and the archive's HTTP and websocket routes. Does not belong here:
//! live outputs (`mse`, `hls`), MP4 box writing (`fmp4`) and reading (`movie`).
//!
//! ```text
//! hub ring ─► recorder ─► <dir>/<uuid>_<unix>.mp4.<ms>.part ─rename─► <uuid>_<unix>.mp4
//!                │                                                     │  (S3 streams)
//!                └─► index + journal ◄──── uploaded ◄──── uploader ◄───┘
//! index ─► /archive/{id}/ranges, /segments, clip.mp4, playlist.m3u8, /ws/archive
//! ```
//!
//! Storage is resolved per stream as the original does (§9.3 of the spec): a stream with its
//! own archive settings uses them; otherwise, with `archive.serving`, any UUID is looked up in
//! the global directory.

pub mod file;
pub mod http;
pub mod index;
pub mod journal;
pub mod playback;
pub mod recorder;
pub mod retention;
pub mod s3;
pub mod upload;
pub mod ws;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{ArchiveConfig, StorageKind, StreamConfig};
use crate::hub::StreamHub;
use crate::movie::Movie;
use index::{EndReason, Location, Segment, StreamIndex};
use journal::Journal;
use s3::S3Store;

/// Why an archive request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive not available: {0}")]
    NotAvailable(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Storage(String),
}

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
    /// The stream's files (filesystem), or its upload spool (S3).
    pub dir: PathBuf,
    pub s3: Option<S3Store>,
    pub ms_per_file: i64,
    pub fragment_ms: i64,
    pub max_age_s: Option<u64>,
    pub max_bytes: Option<u64>,
    pub recording: bool,
    pub status: Status,
    journal: Journal,
    index: Mutex<StreamIndex>,
    /// Wakes retention when a file is closed (cheap: planning stops at the first file kept).
    retention: Arc<tokio::sync::Notify>,
    /// The file being written, as far as it is written (not in the index until closed).
    growing: Mutex<Option<Segment>>,
    uploader: Arc<upload::Uploader>,
}

impl StreamArchive {
    fn index(&self) -> std::sync::MutexGuard<'_, StreamIndex> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the index under its lock.
    pub fn with_index<T>(&self, f: impl FnOnce(&StreamIndex) -> T) -> T {
        f(&self.index())
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

    /// A name for a file starting at `start_ms` that no other file of the stream has.
    pub fn free_name(&self, start_ms: i64) -> i64 {
        self.index().free_name(start_ms)
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
        self.set_growing(None);
        self.index().insert(seg);
        if self.s3.is_some() {
            self.uploader.enqueue(Arc::clone(self), name_s);
        }
        self.retention.notify_one();
    }

    fn uploaded(&self, name_s: i64) {
        self.index().set_location(name_s, Location::Remote);
        if let Err(e) = self.journal.moved(name_s, Location::Remote) {
            warn!("cannot append to the archive journal: {e}");
        }
    }

    /// Deletes a segment wherever it is; returns its size.
    pub async fn delete(&self, name_s: i64) -> Result<u64, String> {
        let Some(seg) = self.segment(name_s) else {
            return Ok(0);
        };
        let name = seg.file_name(&self.id);
        match (seg.location, &self.s3) {
            (Location::Remote, Some(s3)) => s3.delete(&name).await?,
            _ => match tokio::fs::remove_file(self.dir.join(&name)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{name}: {e}")),
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
    pub async fn read(&self, seg: &Segment) -> Result<Bytes, String> {
        let name = seg.file_name(&self.id);
        match (seg.location, &self.s3) {
            (Location::Remote, Some(s3)) => s3.get(&name).await,
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
                    .map_err(|e| format!("{name}: {e}"))?
                    .len();
                if len > crate::movie::MAX_FILE_BYTES {
                    return Err(format!(
                        "{name}: {len} bytes is more than a file may have here"
                    ));
                }
                let data = tokio::fs::read(&path)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| format!("{name}: {e}"))?;
                // A file being written may end in half a fragment: keep whole fragments only.
                let whole = crate::movie::whole_fragments_len(&data)
                    .unwrap_or_else(|| crate::movie::top_level_boxes(&data).1);
                Ok(data.slice(..whole))
            }
        }
    }

    /// Reads and demuxes a segment from wherever it is.
    pub async fn open(&self, seg: &Segment) -> Result<Movie, String> {
        let bytes = self.read(seg).await?;
        Movie::parse(bytes).map_err(|e| format!("{}: {e}", seg.file_name(&self.id)))
    }
}

/// Every stream's archive, the upload spool and the background tasks.
pub struct Archive {
    cfg: ArchiveConfig,
    streams: RwLock<HashMap<Uuid, Arc<StreamArchive>>>,
    uploader: Arc<upload::Uploader>,
    retention_wake: Arc<tokio::sync::Notify>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Archive {
    /// Opens the archive of every configured stream: repairs files a crash left, rebuilds the
    /// indexes from the journals and listings, queues pending uploads, starts the uploader and
    /// retention. Recorders are started per stream with [`Archive::record`].
    pub async fn open(cfg: &ArchiveConfig, streams: &[StreamConfig]) -> Arc<Archive> {
        let archive = Arc::new(Archive {
            cfg: cfg.clone(),
            streams: RwLock::new(HashMap::new()),
            uploader: Arc::new(upload::Uploader::default()),
            retention_wake: Arc::new(tokio::sync::Notify::new()),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        for s in streams {
            if s.archive.is_some() {
                match archive.load_stream(s).await {
                    Ok(sa) => archive.insert(sa),
                    Err(e) => warn!(stream = %s.id, "archive unavailable: {e}"),
                }
            }
        }
        archive
            .tasks
            .spawn(Arc::clone(&archive.uploader).run(archive.cancel.clone()));
        archive
            .tasks
            .spawn(retention::run(Arc::clone(&archive), archive.cancel.clone()));
        archive
    }

    fn insert(&self, sa: Arc<StreamArchive>) {
        if let Ok(mut m) = self.streams.write() {
            m.insert(sa.id, sa);
        }
    }

    pub fn config(&self) -> &ArchiveConfig {
        &self.cfg
    }

    /// Notified when a file is closed.
    pub fn retention_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.retention_wake)
    }

    pub fn upload_backlog(&self) -> upload::Backlog {
        self.uploader.backlog()
    }

    /// Every stream archive known now.
    pub fn all(&self) -> Vec<Arc<StreamArchive>> {
        self.streams
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Starts recording `hub` if its stream records. The recorder ends (closing its file) when
    /// the stream is removed (its hub closes) or the archive shuts down.
    pub fn record(&self, stream: &StreamConfig, hub: Arc<StreamHub>) {
        let Some(sa) = self.get(&stream.id) else {
            return;
        };
        if sa.recording {
            self.tasks
                .spawn(recorder::run(hub, sa, self.cancel.child_token()));
        }
    }

    fn get(&self, id: &Uuid) -> Option<Arc<StreamArchive>> {
        self.streams.read().ok()?.get(id).cloned()
    }

    /// The archive of `id` for serving (§9.3): the stream's own storage, else with
    /// `archive.serving` the global directory for any UUID.
    pub async fn resolve(&self, id: &Uuid) -> Result<Arc<StreamArchive>, ArchiveError> {
        if let Some(sa) = self.get(id) {
            return Ok(sa);
        }
        if !self.cfg.serving {
            return Err(ArchiveError::NotAvailable(
                "archive serving not enabled globally".into(),
            ));
        }
        let dir = if self.cfg.directory.is_empty() {
            "./mp4".to_owned()
        } else {
            self.cfg.directory.clone()
        };
        let sa = self
            .load(
                *id,
                Path::new(&dir),
                None,
                self.ms_per_file_default(),
                false,
                None,
                None,
            )
            .await
            .map_err(ArchiveError::Storage)?;
        // Remember only streams that have files, so requests for random UUIDs cost nothing.
        if !sa.with_index(|i| i.is_empty()) {
            self.insert(Arc::clone(&sa));
        }
        Ok(sa)
    }

    fn ms_per_file_default(&self) -> i64 {
        if self.cfg.ms_per_file > 0 {
            self.cfg.ms_per_file
        } else {
            crate::config::DEFAULT_MS_PER_FILE
        }
    }

    async fn load_stream(&self, s: &StreamConfig) -> Result<Arc<StreamArchive>, String> {
        let a = s.archive.as_ref().ok_or("no archive settings")?;
        let s3 = match a.kind {
            StorageKind::Filesystem => None,
            StorageKind::Minio => Some(S3Store::new(
                &self.cfg.minio_settings,
                &a.minio_bucket,
                &a.minio_path,
            )?),
        };
        self.load(
            s.id,
            Path::new(&a.directory),
            s3,
            a.ms_per_file,
            a.recording,
            a.max_age_s,
            a.max_bytes,
        )
        .await
    }

    /// Builds a stream's archive from its directory, journal and bucket.
    #[allow(clippy::too_many_arguments)]
    async fn load(
        &self,
        id: Uuid,
        dir: &Path,
        s3: Option<S3Store>,
        ms_per_file: i64,
        recording: bool,
        max_age_s: Option<u64>,
        max_bytes: Option<u64>,
    ) -> Result<Arc<StreamArchive>, String> {
        let dir = dir.to_owned();
        let journal = Journal::new(&dir, &id);
        let (local, journaled) = {
            let dir = dir.clone();
            let journal = journal.clone();
            tokio::task::spawn_blocking(move || scan_dir(&dir, &id, &journal))
                .await
                .map_err(|e| e.to_string())??
        };
        let mut remote = Vec::new();
        if let Some(s3) = &s3 {
            if let Err(e) = s3.ensure_bucket().await {
                warn!(stream = %id, "S3 not reachable now ({e}); uploads wait for it");
            }
            match s3.list(&id.to_string()).await {
                Ok(objects) => remote = objects,
                Err(e) => warn!(stream = %id, "cannot list the bucket now: {e}"),
            }
        }
        let mut segments: HashMap<i64, Segment> = HashMap::new();
        // Remote objects: the journal's facts, else the name and the nominal length.
        for o in &remote {
            let Some(name) = o.key.rsplit('/').next() else {
                continue;
            };
            let Some(name_s) = index::parse_file_name(&id, name) else {
                continue;
            };
            let mut seg = journaled
                .get(&name_s)
                .cloned()
                .unwrap_or_else(|| nominal(name_s, ms_per_file, o.size));
            seg.location = Location::Remote;
            segments.insert(name_s, seg);
        }
        // Journal entries already uploaded stay known when the bucket cannot be listed now.
        for (name_s, seg) in &journaled {
            if seg.location == Location::Remote && s3.is_some() {
                segments.entry(*name_s).or_insert_with(|| seg.clone());
            }
        }
        let mut pending = Vec::new();
        for (name_s, bytes) in local {
            if let Some(r) = segments.get(&name_s) {
                if r.location == Location::Remote && r.bytes == bytes {
                    // Uploaded before a crash that kept the local copy.
                    let _ = std::fs::remove_file(dir.join(index::file_name(&id, name_s)));
                    continue;
                }
            }
            let mut seg = journaled
                .get(&name_s)
                .cloned()
                .unwrap_or_else(|| nominal(name_s, ms_per_file, bytes));
            seg.location = Location::Local;
            seg.bytes = bytes;
            if s3.is_some() {
                pending.push(name_s);
            }
            segments.insert(name_s, seg);
        }
        let idx = StreamIndex::from_segments(segments.into_values().collect());
        if recording || !idx.is_empty() {
            if let Err(e) = journal.rewrite(idx.segments()) {
                warn!(stream = %id, "cannot rewrite the archive journal: {e}");
            }
        }
        info!(
            stream = %id,
            segments = idx.segments().len(),
            pending_uploads = pending.len(),
            storage = %s3.as_ref().map_or_else(|| dir.display().to_string(), |s| s.display.clone()),
            "archive index ready"
        );
        let sa = Arc::new(StreamArchive {
            id,
            dir,
            s3,
            ms_per_file,
            fragment_ms: self.cfg.fragment_ms,
            max_age_s,
            max_bytes,
            recording,
            status: Status::default(),
            journal,
            index: Mutex::new(idx),
            retention: Arc::clone(&self.retention_wake),
            growing: Mutex::new(None),
            uploader: Arc::clone(&self.uploader),
        });
        pending.sort_unstable();
        for name_s in pending {
            self.uploader.enqueue(Arc::clone(&sa), name_s);
        }
        Ok(sa)
    }

    /// Stops recorders (closing their files), the uploader and retention; waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A segment known only by its name: the original's assumption of `ms_per_file`.
fn nominal(name_s: i64, ms_per_file: i64, bytes: u64) -> Segment {
    Segment {
        name_s,
        start_ms: name_s * 1000,
        duration_ms: ms_per_file,
        bytes,
        location: Location::Local,
        end: EndReason::Unknown,
    }
}

/// Lists a stream's files in `dir` (repairing `.part` files a crash left) and loads its
/// journal. Returns (name seconds, bytes) of each file and the journal's segments.
#[allow(clippy::type_complexity)]
fn scan_dir(
    dir: &Path,
    id: &Uuid,
    journal: &Journal,
) -> Result<(Vec<(i64, u64)>, HashMap<i64, Segment>), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut journaled = journal.load();
    let prefix = id.to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with(&prefix) {
            continue;
        }
        if name.ends_with(file::PART_SUFFIX) {
            match file::recover(&entry.path()) {
                Ok(Some(r)) => {
                    let fname = r
                        .path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(name_s) = index::parse_file_name(id, &fname) {
                        warn!(
                            file = %fname,
                            duration_ms = r.duration_ms,
                            "repaired a file the last run did not close"
                        );
                        journaled.insert(
                            name_s,
                            Segment {
                                name_s,
                                start_ms: r.start_ms,
                                duration_ms: r.duration_ms,
                                bytes: r.bytes,
                                location: Location::Local,
                                end: EndReason::ServerCrashed,
                            },
                        );
                        names.push((name_s, r.bytes));
                    }
                }
                Ok(None) => {}
                Err(e) => warn!("cannot repair {name}: {e}"),
            }
            continue;
        }
        let Some(name_s) = index::parse_file_name(id, &name) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_file() {
            names.push((name_s, meta.len()));
        }
    }
    Ok((names, journaled))
}

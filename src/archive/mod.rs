//! The archive: recording streams into MP4 files on disk or S3, and serving them back.
//!
//! Belongs here: the recorder (a hub consumer), the file format on disk, the per-stream index
//! and its sidecar journal, storage backends (a directory; an S3 bucket behind a local upload
//! spool), retention, the start-up merge of what is stored (`startup`), clip plans and archive
//! playback sessions (`ws`). Does not belong here: the HTTP routes and websocket upgrade
//! (`api::archive`, `api::live`), live outputs (`mse`, `hls`), MP4 bytes (`mp4`), webhook
//! delivery (events go into an `events::EventSink`).
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

pub mod clip;
pub mod file;
pub mod index;
pub mod journal;
pub mod playback;
pub mod recorder;
pub mod retention;
pub mod s3;
pub mod startup;
pub mod stream;
pub mod thumbs;
pub mod upload;
pub mod ws;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use self::s3::S3Store;
use crate::config::{ArchiveConfig, StorageKind, StreamConfig};
use crate::hub::StreamHub;
use index::{EndReason, Location, Segment, StreamIndex};
use journal::Journal;
pub use stream::{Status, StatusInner, StreamArchive};

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
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The original's answer when `ranges` cannot list the files.
    #[error("failed to list archive files")]
    ListingFailed,
}

/// Why stored files could not be read, written, listed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    S3(#[from] self::s3::S3Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: {len} bytes is more than a file may have here")]
    TooBig { name: String, len: u64 },
    #[error("{name}: {source}")]
    Unreadable {
        name: String,
        #[source]
        source: crate::mp4::movie::Mp4Error,
    },
    #[error("the archive task failed: {0}")]
    Task(String),
    #[error("no archive settings")]
    NoSettings,
}

impl StorageError {
    /// An I/O error on `path`.
    pub fn io(path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.to_string();
        move |source| StorageError::Io { path, source }
    }
}

/// How stale a fleet node's view of a bucket it does not write may be, ms.
const REFRESH_MS: i64 = 10_000;
/// How long after a fleet node starts recording a camera it merges the bucket's facts into
/// the index object it writes (the previous owner's last uploads land meanwhile).
const TAKEOVER_MERGE_MS: i64 = 120_000;
/// How long a stop waits for closed files to reach the bucket before the process ends.
const UPLOAD_DRAIN: std::time::Duration = std::time::Duration::from_secs(8);

/// A running recorder: its task, what stops it, and why (set before stopping it).
struct Recorder {
    task: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
    why: Arc<std::sync::OnceLock<index::EndReason>>,
}

/// Every stream's archive, the upload spool and the background tasks.
pub struct Archive {
    cfg: ArchiveConfig,
    streams: RwLock<HashMap<Uuid, Arc<StreamArchive>>>,
    /// Each recording stream's recorder, to wait for it when the stream stops.
    recorders: Mutex<HashMap<Uuid, Recorder>>,
    /// Set in a fleet (see [`Archive::join_fleet`]).
    fleet: std::sync::atomic::AtomicBool,
    uploader: Arc<upload::Uploader>,
    retention_wake: Arc<tokio::sync::Notify>,
    /// Where `segment_closed`, `upload_done`, `retention_deleted` and `disk_low` go.
    pub events: Arc<dyn crate::events::EventSink>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Makes the recordings' thumbnails (`thumbs`), once `app` gave one.
    thumbnailer: std::sync::OnceLock<Arc<dyn thumbs::Thumbnailer>>,
}

impl Archive {
    /// Opens the archive of every configured stream: repairs files a crash left, rebuilds the
    /// indexes from the journals and listings, queues pending uploads, starts the uploader and
    /// retention. Recorders are started per stream with [`Archive::record`].
    pub async fn open(
        cfg: &ArchiveConfig,
        streams: &[StreamConfig],
        events: Arc<dyn crate::events::EventSink>,
    ) -> Arc<Archive> {
        let archive = Arc::new(Archive {
            events,
            cfg: cfg.clone(),
            streams: RwLock::new(HashMap::new()),
            recorders: Mutex::new(HashMap::new()),
            fleet: std::sync::atomic::AtomicBool::new(false),
            uploader: Arc::new(upload::Uploader::default()),
            retention_wake: Arc::new(tokio::sync::Notify::new()),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            thumbnailer: std::sync::OnceLock::new(),
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

    /// Files waiting for upload, per stream.
    pub fn upload_backlog_by_stream(&self) -> HashMap<Uuid, upload::Backlog> {
        self.uploader.backlog_by_stream()
    }

    /// Gives the archive its thumbnail maker (before recorders start).
    pub fn set_thumbnailer(&self, t: Arc<dyn thumbs::Thumbnailer>) {
        let _ = self.thumbnailer.set(t);
    }

    /// Whether any stream's archive lives in an S3 bucket.
    pub fn uses_s3(&self) -> bool {
        self.all().iter().any(|sa| sa.s3.is_some())
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
        let Some(sa) = self.known(&stream.id) else {
            return;
        };
        if sa.recording {
            if self.fleet() && sa.s3.is_some() {
                // Another node may have recorded it until now: its files, with their facts,
                // join the index before this node writes the bucket's index object.
                let now_ms = crate::media::unix_ms_now();
                sa.merge_until_ms.store(
                    now_ms + TAKEOVER_MERGE_MS,
                    std::sync::atomic::Ordering::Relaxed,
                );
                // The previous owner's last file started no later than now.
                sa.name_floor_s.store(
                    now_ms.div_euclid(1000) + 1,
                    std::sync::atomic::Ordering::Relaxed,
                );
                let sa = Arc::clone(&sa);
                tokio::spawn(async move {
                    if let Err(e) = sa.refresh().await {
                        warn!(stream = %sa.id, "cannot re-read the bucket: {e}");
                    }
                });
            }
            let cancel = self.cancel.child_token();
            let why = Arc::new(std::sync::OnceLock::new());
            let thumbs = self
                .thumbnailer
                .get()
                .filter(|_| self.cfg.thumbnail_interval_ms > 0)
                .map(|t| (Arc::clone(t), self.cfg.thumbnail_interval_ms));
            let task = self.tasks.spawn(recorder::run(
                hub,
                sa,
                cancel.clone(),
                Arc::clone(&why),
                thumbs,
            ));
            if let Ok(mut r) = self.recorders.lock() {
                r.insert(stream.id, Recorder { task, cancel, why });
            }
        }
    }

    /// Stops a stream's recorder while the stream goes on (its file is closed, ending for
    /// `why`), and waits for it (at most 10 s).
    pub async fn stop_recording(&self, id: &Uuid, why: index::EndReason) {
        let cancel = self.recorders.lock().ok().and_then(|r| {
            r.get(id).map(|rec| {
                let _ = rec.why.set(why);
                rec.cancel.clone()
            })
        });
        if let Some(cancel) = cancel {
            cancel.cancel();
        }
        self.wait_recorder(id).await;
    }

    /// This node is one of a fleet sharing its bucket: retention of an S3 camera is left to
    /// the node recording it.
    pub fn join_fleet(&self) {
        self.fleet.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn fleet(&self) -> bool {
        self.fleet.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a recorder runs for this stream here.
    pub fn records_here(&self, id: &Uuid) -> bool {
        self.recorders
            .lock()
            .is_ok_and(|r| r.get(id).is_some_and(|rec| !rec.task.is_finished()))
    }

    /// In a fleet, after taking a camera over from a node that died: the gap after the last
    /// file it uploaded is `node_failed` (its file being written died with it).
    pub fn note_takeover_after_failure(&self, id: &Uuid) {
        if let Some(sa) = self.known(id) {
            tokio::spawn(async move {
                if let Err(e) = sa.refresh().await {
                    warn!(stream = %sa.id, "cannot re-read the bucket: {e}");
                }
                sa.mark_last_end(index::EndReason::NodeFailed);
            });
        }
    }

    /// Waits (at most 10 s) for a stopped stream's recorder to close its file.
    pub async fn wait_recorder(&self, id: &Uuid) {
        let handle = self.recorders.lock().ok().and_then(|mut r| r.remove(id));
        if let Some(Recorder { task: h, .. }) = handle {
            if tokio::time::timeout(std::time::Duration::from_secs(10), h)
                .await
                .is_err()
            {
                warn!(stream = %id, "the recorder did not finish within 10 s");
            }
        }
    }

    /// Brings a stream's archive in line with its (re-read) settings before it starts: kept
    /// if they did not change, opened anew if they did, dropped if it has none now.
    pub async fn update_stream(&self, s: &StreamConfig) {
        let current = self.known(&s.id);
        match (&s.archive, current) {
            (None, Some(_)) => {
                if let Ok(mut m) = self.streams.write() {
                    m.remove(&s.id);
                }
            }
            (Some(a), Some(sa)) if sa.settings.as_ref() == Some(a) => {}
            (Some(_), _) => match self.load_stream(s).await {
                Ok(sa) => self.insert(sa),
                Err(e) => warn!(stream = %s.id, "archive unavailable: {e}"),
            },
            (None, None) => {}
        }
    }

    /// The archive of a stream that has one now (no lookup in the serving directory).
    pub fn known(&self, id: &Uuid) -> Option<Arc<StreamArchive>> {
        self.streams.read().ok()?.get(id).cloned()
    }

    /// The archive of `id` for serving (§9.3): the stream's own storage, else with
    /// `archive.serving` the global directory for any UUID.
    pub async fn resolve(&self, id: &Uuid) -> Result<Arc<StreamArchive>, ArchiveError> {
        if let Some(sa) = self.known(id) {
            // Another node may be recording it, or have recorded it until a hand-off or a
            // failure moved it here: take in the files it put in the bucket.
            if self.fleet() || !self.records_here(id) {
                sa.refresh_if_older(REFRESH_MS).await;
            }
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
                None,
                self.ms_per_file_default(),
                false,
                None,
                None,
            )
            .await?;
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

    async fn load_stream(&self, s: &StreamConfig) -> Result<Arc<StreamArchive>, StorageError> {
        let a = s.archive.as_ref().ok_or(StorageError::NoSettings)?;
        let s3 = match a.kind {
            StorageKind::Filesystem => None,
            StorageKind::Minio => Some(S3Store::new(
                &self.cfg.minio_settings,
                &a.minio_bucket,
                &a.minio_path,
            )?),
        };
        // `[[local_files]]` get no defaults filled in (as in the original): use the global
        // directory rather than the working directory.
        let dir = [a.directory.as_str(), self.cfg.directory.as_str(), "./mp4"]
            .into_iter()
            .find(|d| !d.is_empty())
            .unwrap_or("./mp4");
        self.load(
            s.id,
            Path::new(dir),
            s3,
            Some(a.clone()),
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
        settings: Option<crate::config::StreamArchiveConfig>,
        ms_per_file: i64,
        recording: bool,
        max_age_s: Option<u64>,
        max_bytes: Option<u64>,
    ) -> Result<Arc<StreamArchive>, StorageError> {
        let dir = dir.to_owned();
        let journal = Journal::new(&dir, &id);
        let (local, mut journaled) = {
            let dir = dir.clone();
            let journal = journal.clone();
            tokio::task::spawn_blocking(move || scan_dir(&dir, &id, &journal))
                .await
                .map_err(|e| StorageError::Task(e.to_string()))??
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
            // What earlier owners (other fleet nodes, or this node before it lost its disk)
            // knew of their files; this node's own journal wins.
            match s3.get_if_exists(&format!("{id}.index.jsonl")).await {
                Ok(Some(b)) => {
                    // Only for files the bucket holds: an entry of a file deleted since is
                    // not brought back.
                    let listed: std::collections::HashSet<i64> = remote
                        .iter()
                        .filter_map(|o| o.key.rsplit('/').next())
                        .filter_map(|n| index::parse_file_name(&id, n))
                        .collect();
                    for (n, seg) in journal::replay(&String::from_utf8_lossy(&b)) {
                        if listed.contains(&n) {
                            journaled.entry(n).or_insert(seg);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(stream = %id, "cannot read the bucket's index object: {e}"),
            }
        }
        let listing: Vec<(String, u64)> = remote.into_iter().map(|o| (o.key, o.size)).collect();
        let merged = startup::merge(
            &id,
            ms_per_file,
            s3.is_some().then_some(&listing[..]),
            &journaled,
            &local,
        );
        for name_s in &merged.uploaded_copies {
            // Uploaded before a crash that kept the local copy.
            let _ = std::fs::remove_file(dir.join(index::file_name(&id, *name_s)));
        }
        let pending = merged.pending;
        let idx = StreamIndex::from_segments(merged.segments);
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
            settings,
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
            events: Arc::clone(&self.events),
            growing: Mutex::new(None),
            uploader: Arc::clone(&self.uploader),
            refreshed_ms: std::sync::atomic::AtomicI64::new(crate::media::unix_ms_now()),
            merge_until_ms: std::sync::atomic::AtomicI64::new(0),
            name_floor_s: std::sync::atomic::AtomicI64::new(0),
            thumbs: Mutex::new(thumbs::Known::default()),
        });
        for name_s in pending {
            self.uploader.enqueue(Arc::clone(&sa), name_s);
        }
        Ok(sa)
    }

    /// Stops recorders (closing their files), the uploader and retention; waits for them.
    pub async fn shutdown(&self) {
        // Recorders close their files as their streams stop; those files go to the bucket
        // before the process ends (a node leaving a fleet for good would strand them in its
        // spool), unless the bucket is unreachable: bounded.
        let ids: Vec<Uuid> = self
            .recorders
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.wait_recorder(&id).await;
        }
        let deadline = tokio::time::Instant::now() + UPLOAD_DRAIN;
        while self.uploader.pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if self.uploader.pending() > 0 {
            warn!(
                files = self.uploader.pending(),
                "files left in the upload spool; they go up at the next start"
            );
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Lists a stream's files in `dir` (repairing `.part` files a crash left) and loads its
/// journal. Returns (name seconds, bytes) of each file and the journal's segments.
#[allow(clippy::type_complexity)]
fn scan_dir(
    dir: &Path,
    id: &Uuid,
    journal: &Journal,
) -> Result<(Vec<(i64, u64)>, HashMap<i64, Segment>), StorageError> {
    std::fs::create_dir_all(dir).map_err(StorageError::io(dir.display()))?;
    let mut journaled = journal.load();
    let prefix = id.to_string();
    let entries = std::fs::read_dir(dir).map_err(StorageError::io(dir.display()))?;
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

//! The `snapshot` output: a JPEG of a stream's newest cached keyframe, answered at once (no
//! wait for the next keyframe). Each keyframe is decoded at most once per size: requests that
//! arrive together share one decode, later ones get the cached picture until a newer keyframe
//! arrives. Decodes run in a bounded pool (`max_decoders` at a time): H.264 in-process
//! (`h264`), H.265 and whatever OpenH264 cannot decode in an ffmpeg process (`ffmpeg`). When the
//! camera is offline the last picture made is served, with its time.
//!
//! Belongs here: the cache per stream, the single flight, the pool. Does not belong here: the
//! decoder input (`picture`), the decoder process (`ffmpeg`), HTTP (`api::snapshot`).

pub mod ffmpeg;
pub mod h264;
pub mod picture;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OnceCell, Semaphore};
use uuid::Uuid;

use crate::hub::StreamHub;

/// Sizes cached per keyframe (a grid asks for one or two; more are decoded again).
const SIZES_PER_KEYFRAME: usize = 4;

/// A picture and when its keyframe was received.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub jpeg: Bytes,
    /// Wall-clock time of the keyframe, Unix ms.
    pub taken_ms: i64,
    /// From the keyframe held now (`false`: the last picture of a camera that has none now).
    pub live: bool,
}

/// Why there is no snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("no picture yet: the camera has sent no keyframe since the gateway started")]
    NoPicture,
    #[error("the stream has no video: there is nothing to take a picture of")]
    NoVideo,
    #[error(transparent)]
    Decode(#[from] ffmpeg::DecodeError),
}

type Cell = Arc<OnceCell<Result<Bytes, SnapshotError>>>;

/// One stream's pictures.
#[derive(Default)]
struct Cache {
    /// The hub they come from: gone (the stream was removed) means the entry goes too.
    hub: std::sync::Weak<StreamHub>,
    /// The ring sequence number of the keyframe the cells are for.
    key_seq: Option<u64>,
    key_wall_ms: i64,
    cells: Vec<(Option<u32>, Cell)>,
    /// The last picture made, per size, for when the camera has no keyframe.
    last: Vec<(Option<u32>, Bytes, i64)>,
}

/// Snapshots of every stream.
pub struct Snapshots {
    pool: Semaphore,
    caches: Mutex<HashMap<Uuid, Cache>>,
    /// Keyframes decoded (in-process, and by ffmpeg), and requests answered (for `/metrics`).
    pub decodes: AtomicU64,
    pub decodes_ffmpeg: AtomicU64,
    pub requests: AtomicU64,
}

impl Snapshots {
    pub fn new(max_decoders: usize) -> Snapshots {
        Snapshots {
            pool: Semaphore::new(max_decoders.max(1)),
            caches: Mutex::new(HashMap::new()),
            decodes: AtomicU64::new(0),
            decodes_ffmpeg: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Cache>> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The picture of `hub`'s newest keyframe at `width`, or the last one made if the hub holds
    /// no keyframe now.
    pub async fn get(
        &self,
        hub: &Arc<StreamHub>,
        width: Option<u32>,
    ) -> Result<Snapshot, SnapshotError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Some((seq, frame)) = hub.newest_keyframe() else {
            let audio_only = hub
                .health()
                .params
                .as_ref()
                .is_some_and(|p| p.video.is_none());
            let nothing = if audio_only {
                SnapshotError::NoVideo
            } else {
                SnapshotError::NoPicture
            };
            return self.last(&hub.id, width).ok_or(nothing);
        };
        let cell = {
            let mut caches = self.caches();
            if !caches.contains_key(&hub.id) {
                caches.retain(|_, c| c.hub.strong_count() > 0);
            }
            let c = caches.entry(hub.id).or_default();
            if !std::ptr::eq(c.hub.as_ptr(), Arc::as_ptr(hub)) {
                // A new stream under this id: nothing of the old one applies.
                *c = Cache {
                    hub: Arc::downgrade(hub),
                    ..Cache::default()
                };
            }
            if c.key_seq != Some(seq) {
                c.key_seq = Some(seq);
                c.key_wall_ms = frame.wall_ms;
                c.cells.clear();
            }
            match c.cells.iter().find(|(w, _)| *w == width) {
                Some((_, cell)) => Arc::clone(cell),
                None => {
                    if c.cells.len() >= SIZES_PER_KEYFRAME {
                        c.cells.remove(0);
                    }
                    let cell: Cell = Arc::new(OnceCell::new());
                    c.cells.push((width, Arc::clone(&cell)));
                    cell
                }
            }
        };
        let result = cell
            .get_or_init(|| async {
                let Some(input) = picture::keyframe_mp4(&frame) else {
                    return Err(SnapshotError::NoPicture);
                };
                let Ok(_permit) = self.pool.acquire().await else {
                    return Err(SnapshotError::NoPicture);
                };
                self.decodes.fetch_add(1, Ordering::Relaxed);
                Ok(decode(&frame, input, width, Some(&self.decodes_ffmpeg)).await?)
            })
            .await
            .clone();
        match result {
            Ok(jpeg) => {
                self.remember(&hub.id, width, &jpeg, frame.wall_ms);
                Ok(Snapshot {
                    jpeg,
                    taken_ms: frame.wall_ms,
                    live: true,
                })
            }
            // A keyframe that does not decode: the last good picture, if any, beats an error.
            Err(e) => self.last(&hub.id, width).ok_or(e),
        }
    }

    fn remember(&self, id: &Uuid, width: Option<u32>, jpeg: &Bytes, taken_ms: i64) {
        let mut caches = self.caches();
        let c = caches.entry(*id).or_default();
        c.last.retain(|(w, _, _)| *w != width);
        if c.last.len() >= SIZES_PER_KEYFRAME {
            c.last.remove(0);
        }
        c.last.push((width, jpeg.clone(), taken_ms));
    }

    fn last(&self, id: &Uuid, width: Option<u32>) -> Option<Snapshot> {
        let caches = self.caches();
        let (_, jpeg, taken_ms) = caches.get(id)?.last.iter().find(|(w, _, _)| *w == width)?;
        Some(Snapshot {
            jpeg: jpeg.clone(),
            taken_ms: *taken_ms,
            live: false,
        })
    }
}

/// One picture: H.264 in-process, falling back to ffmpeg for what OpenH264 cannot decode (and
/// for H.265); `by_ffmpeg` counts the ffmpeg runs, if given.
async fn decode(
    frame: &crate::media::Frame,
    mp4: Bytes,
    width: Option<u32>,
    by_ffmpeg: Option<&AtomicU64>,
) -> Result<Bytes, ffmpeg::DecodeError> {
    let annexb = frame
        .params
        .video
        .as_ref()
        .filter(|v| v.codec == crate::media::VideoCodec::H264)
        .and_then(|v| picture::annexb_keyframe(&v.sample_entry, &frame.data));
    if let Some(au) = annexb {
        match tokio::task::spawn_blocking(move || h264::jpeg(&au, width)).await {
            Ok(Ok(jpeg)) => return Ok(jpeg),
            Ok(Err(e)) => tracing::debug!("in-process decode failed, trying ffmpeg: {e}"),
            Err(e) => tracing::warn!("in-process decode failed, trying ffmpeg: {e}"),
        }
    }
    if let Some(n) = by_ffmpeg {
        n.fetch_add(1, Ordering::Relaxed);
    }
    ffmpeg::jpeg(mp4, width).await
}

/// A picture of one keyframe, outside any cache (archive thumbnails): `None` when it is not a
/// video keyframe or does not decode.
pub async fn picture(frame: &crate::media::Frame, width: Option<u32>) -> Option<Bytes> {
    let mp4 = picture::keyframe_mp4(frame)?;
    match decode(frame, mp4, width, None).await {
        Ok(jpeg) => Some(jpeg),
        Err(e) => {
            tracing::warn!("cannot make a thumbnail: {e}");
            None
        }
    }
}

//! HLS and LL-HLS output: CMAF segments and parts cut from the hub's ring, kept in memory and
//! served at `/hls/<uuid>.m3u8` and the names that playlist lists.
//!
//! Belongs here: the per-stream task that feeds the segmenter ([`run`]), the pure cores
//! (`segmenter`: frames → parts and segments; `playlist`: the m3u8 text; `store`: the window),
//! the HTTP handler (`http`) and the optional disk mirror (`mirror`). Does not belong here: fMP4
//! boxes (`fmp4`), which streams exist (`app`).
//!
//! File names (all relative to the playlist): `<uuid>.m3u8`, `<uuid><NNNN>.m4s` (segment with
//! media sequence number NNNN, at least 4 digits, like the original's `.ts` names),
//! `<uuid><NNNN>.<P>.m4s` (part P of it), `<uuid>_init<K>.mp4` (init segment K).

pub mod http;
mod mirror;
pub mod playlist;
pub mod segmenter;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::config::HlsConfig;
use crate::hub::{RecvError, StreamHub};
pub use segmenter::{Segmenter, Targets};
pub use store::{Store, Window, WindowConfig};

/// Frames read from the ring per wake-up at most.
const BATCH: usize = 64;
/// A frame older than this when the task reads it comes from the GOP cache.
const CACHED_AGE: Duration = Duration::from_millis(500);

/// The segment and part targets of a configuration.
pub fn targets(cfg: &HlsConfig) -> Targets {
    Targets {
        segment_90k: cfg.ms_per_segment * 90,
        part_90k: cfg.ms_per_part * 90,
    }
}

/// A new, empty store for a stream.
pub fn new_store(id: uuid::Uuid, cfg: &HlsConfig) -> Arc<Store> {
    let token = format!("{:08x}", rand::random::<u32>());
    Arc::new(Store::new(Window::new(
        id.hyphenated().to_string(),
        token,
        WindowConfig {
            window_size: cfg.window_size as usize,
            low_latency: cfg.low_latency,
            targets: targets(cfg),
        },
    )))
}

/// Feeds one stream's frames to its segmenter and store until the stream is removed or
/// `cancel` fires. When the stream goes offline the open segment is closed at once (the next
/// one is a discontinuity); when nothing has arrived for as long as the window lasts, the
/// window is emptied so a returning viewer is not served stale video as live.
pub async fn run(
    hub: Arc<StreamHub>,
    store: Arc<Store>,
    cfg: HlsConfig,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("hls", stream = %hub.id);
    async move {
        let stale_after = Duration::from_millis(
            (cfg.ms_per_segment as u64).saturating_mul(u64::from(cfg.window_size)),
        )
        .max(Duration::from_secs(30));
        let mirror = cfg
            .mirror_to_disk
            .then(|| mirror::Mirror::start(hub.id, &cfg.directory, cancel.clone()));
        let mut sub = hub.subscribe();
        let mut health = hub.watch_health();
        let mut seg = Segmenter::new(targets(&cfg));
        let mut frames = Vec::with_capacity(BATCH);
        let mut events = Vec::new();
        let mut emptied = false;
        loop {
            let got = tokio::select! {
                _ = cancel.cancelled() => break,
                changed = health.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if !health.borrow_and_update().online {
                        seg.break_here(&mut events);
                        finish(&store, &mut events, mirror.as_ref());
                    }
                    continue;
                }
                r = tokio::time::timeout(stale_after, sub.recv(&mut frames, BATCH)) => r,
            };
            match got {
                Err(_) => {
                    if !emptied {
                        debug!("no frames for {stale_after:?}: emptying the HLS window");
                        seg.break_here(&mut events);
                        finish(&store, &mut events, mirror.as_ref());
                        store.clear();
                        emptied = true;
                    }
                    continue;
                }
                Ok(Err(RecvError::Closed)) => break,
                Ok(Err(RecvError::Lagged { skipped })) => {
                    warn!(
                        skipped,
                        "HLS fell behind the stream; continuing at a keyframe"
                    );
                    seg.break_here(&mut events);
                    finish(&store, &mut events, mirror.as_ref());
                    continue;
                }
                Ok(Ok(_)) => {}
            }
            emptied = false;
            for f in frames.drain(..) {
                seg.push(&f, f.received.elapsed() > CACHED_AGE, &mut events);
            }
            finish(&store, &mut events, mirror.as_ref());
        }
    }
    .instrument(span)
    .await
}

/// Applies events to the store, and hands completed segments to the disk mirror.
fn finish(store: &Store, events: &mut Vec<segmenter::Event>, mirror: Option<&mirror::Mirror>) {
    let completed = events
        .iter()
        .any(|e| matches!(e, segmenter::Event::SegmentEnd { .. }));
    store.apply(events);
    if let (true, Some(m)) = (completed, mirror) {
        m.update(&store.lock());
    }
}

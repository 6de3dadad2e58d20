//! HLS and LL-HLS output: CMAF segments and parts cut from the hub's ring, kept in memory and
//! served at `/hls/<uuid>.m3u8` and the names that playlist lists.
//!
//! Belongs here: the per-stream task that feeds the segmenter ([`run`]), the pure cores
//! (`playlist`: the m3u8 text; `store`: the window), HLS client counting (`sessions`) and the
//! optional disk mirror (`mirror`). Does not belong here: cutting (`mp4::segmenter`), fMP4
//! bytes (`mp4::fmp4`), the HTTP handler (`api::hls`), which streams exist (`app`).
//!
//! File names (all relative to the playlist): `<uuid>.m3u8`, `<uuid><NNNN>.m4s` (segment with
//! media sequence number NNNN, at least 4 digits, like the original's `.ts` names),
//! `<uuid><NNNN>.<P>.m4s` (part P of it), `<uuid>_init<K>.mp4` (init segment K).

mod mirror;
pub mod playlist;
pub mod sessions;
mod spill;
pub mod store;

pub use spill::read as read_media;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::config::HlsConfig;
use crate::hub::{RecvError, StreamHub, WakeAt};
use crate::mp4::segmenter;
pub use crate::mp4::segmenter::{Segmenter, Targets};
pub use store::{Store, Window, WindowConfig};

/// Frames read from the ring per wake-up at most.
const BATCH: usize = 64;
/// A frame older than this when the task reads it comes from the GOP cache.
const CACHED_AGE: Duration = Duration::from_millis(500);
/// The muxer wakes for the frame that ends its part, or once frames have pended this long
/// (well under [`CACHED_AGE`], so a live frame never looks cached).
const MAX_PENDING: Duration = Duration::from_millis(250);
/// HLS muxing stops this long after the last HLS request (unless `always_remux`).
pub const IDLE: Duration = Duration::from_secs(60);

/// The segment and part targets of a configuration.
pub fn targets(cfg: &HlsConfig) -> Targets {
    Targets::hls(cfg.ms_per_segment * 90, cfg.ms_per_part * 90)
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

/// How the muxing loop ended.
enum Ended {
    /// The stream was removed or the process is stopping.
    Stop,
    /// Nobody asked for HLS for [`IDLE`].
    Idle,
}

/// Runs a stream's HLS output until the stream is removed or `cancel` fires. Unless
/// `always_remux` (or the disk mirror) asks for it all the time, it muxes only while HLS is
/// being requested: the first request starts it from the oldest cached keyframe (so a segment is
/// ready at once), and [`IDLE`] without requests stops it and frees the window.
pub async fn run(
    hub: Arc<StreamHub>,
    store: Arc<Store>,
    cfg: HlsConfig,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("hls", stream = %hub.id);
    async move {
        let always = cfg.always_remux || cfg.mirror_to_disk;
        let mirror = cfg
            .mirror_to_disk
            .then(|| mirror::Mirror::start(hub.id, &cfg.directory, cancel.clone()));
        // With the mirror on, its files are the disk copy; nothing is spilled.
        let spiller = (cfg.memory_ms > 0 && !cfg.mirror_to_disk).then(|| {
            // Parts kept in memory: `memory_ms` of them, rounded up.
            let part_ms = cfg.ms_per_part.max(1) as u64;
            spill::Spiller::start(
                hub.id,
                &cfg.directory,
                cfg.memory_ms.div_ceil(part_ms) as usize,
                Arc::clone(&store),
                cancel.clone(),
            )
        });
        let out = Outputs {
            mirror: mirror.as_ref(),
            spiller: spiller.as_ref(),
        };
        loop {
            if !always {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = store.requested() => {}
                }
            }
            debug!("HLS muxer started");
            match mux(&hub, &store, &cfg, &cancel, always, &out).await {
                Ended::Stop => return,
                Ended::Idle => {
                    clear(&store, &out);
                    debug!("HLS muxer stopped: no requests");
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Feeds the stream's frames to the segmenter and the store. When the stream goes offline the
/// open segment is closed at once (the next one is a discontinuity); when nothing has arrived
/// for as long as the window lasts, the window is emptied so a returning viewer is not served
/// stale video as live.
async fn mux(
    hub: &Arc<StreamHub>,
    store: &Store,
    cfg: &HlsConfig,
    cancel: &CancellationToken,
    always: bool,
    out: &Outputs<'_>,
) -> Ended {
    let stale_after = Duration::from_millis(
        (cfg.ms_per_segment as u64).saturating_mul(u64::from(cfg.window_size)),
    )
    .max(Duration::from_secs(30));
    let mut sub = hub.subscribe_from_oldest_key();
    let mut health = hub.watch_health();
    let mut seg = Segmenter::new(targets(cfg));
    let mut frames = Vec::with_capacity(BATCH);
    let mut events = Vec::new();
    let mut emptied = false;
    let mut idle_check = tokio::time::interval(IDLE / 4);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = WakeAt::at_cut(seg.next_cut(), MAX_PENDING);
        let got = tokio::select! {
            _ = cancel.cancelled() => return Ended::Stop,
            _ = idle_check.tick() => {
                if !always && !store.active() {
                    return Ended::Idle;
                }
                continue;
            }
            changed = health.changed() => {
                if changed.is_err() {
                    return Ended::Stop;
                }
                if !health.borrow_and_update().online {
                    // What the session sent last is still pending: it ends the segment.
                    let _ = sub.try_recv(&mut frames, usize::MAX);
                    for f in frames.drain(..) {
                        seg.push(&f, false, &mut events);
                    }
                    seg.break_here(&mut events);
                    finish(store, &mut events, out);
                }
                continue;
            }
            r = tokio::time::timeout(stale_after, sub.recv_when(&mut frames, BATCH, wake)) => r,
        };
        match got {
            Err(_) => {
                if !emptied {
                    debug!("no frames for {stale_after:?}: emptying the HLS window");
                    seg.break_here(&mut events);
                    finish(store, &mut events, out);
                    clear(store, out);
                    emptied = true;
                }
                continue;
            }
            Ok(Err(RecvError::Closed)) => return Ended::Stop,
            Ok(Err(RecvError::Lagged { skipped })) => {
                warn!(
                    skipped,
                    "HLS fell behind the stream; continuing at a keyframe"
                );
                seg.break_here(&mut events);
                finish(store, &mut events, out);
                continue;
            }
            Ok(Ok(_)) => {}
        }
        emptied = false;
        for f in frames.drain(..) {
            seg.push(&f, f.received.elapsed() > CACHED_AGE, &mut events);
        }
        finish(store, &mut events, out);
    }
}

/// Where media goes besides the window: the disk mirror, or files that take older parts out of
/// memory.
struct Outputs<'a> {
    mirror: Option<&'a mirror::Mirror>,
    spiller: Option<&'a spill::Spiller>,
}

/// Applies events to the store, and hands completed segments (to the mirror) and parts (to
/// the spiller) on.
fn finish(store: &Store, events: &mut Vec<segmenter::Event>, out: &Outputs<'_>) {
    let completed = events
        .iter()
        .any(|e| matches!(e, segmenter::Event::SegmentEnd { .. }));
    let parts = events
        .iter()
        .any(|e| matches!(e, segmenter::Event::Part(_)));
    store.apply(events);
    if let (Some(m), true) = (out.mirror, completed) {
        m.update(&store.lock());
    }
    if let (Some(s), true) = (out.spiller, parts) {
        s.update(store);
    }
}

/// Empties the window (and deletes what it had written out).
fn clear(store: &Store, out: &Outputs<'_>) {
    store.clear();
    if let Some(s) = out.spiller {
        s.update(store);
    }
}

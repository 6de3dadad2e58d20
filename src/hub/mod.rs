//! Fan-out: one bounded ring per stream, read by any number of consumers through cursors.
//!
//! Belongs here: the registry of live streams ([`Hub`]), publishing frames ([`StreamHub::publish`]),
//! subscriptions that wait for frames and report lag, the stream's health (online, last error,
//! current codec parameters) and its counters. Does not belong here: where frames come from
//! (`source`), what consumers do with them (`mse`, later `hls` and `archive`).
//!
//! Publishing takes a short lock, appends one frame (a few reference-count increments, no copy)
//! and bumps a `watch` version; waiting consumers wake and copy out batches of frames. Lazy
//! consumers (`lazy`: HLS, the recorder) instead wake only for the frame that ends their part
//! or fragment. Memory is bounded by the ring's [`Limits`] whatever the consumers do: a
//! consumer that falls behind is moved to the newest keyframe and told how many frames it
//! missed.

mod delay;
pub mod diagnostics;
mod lazy;
mod ring;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use uuid::Uuid;

use crate::media::{Frame, StreamParams};
pub use delay::{DelayHistogram, DelaySummary};
pub use lazy::WakeAt;
pub use ring::{Cursor, Limits, ReadOutcome, Ring};

/// What a stream looks like from outside at one moment.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Frames are flowing from the source.
    pub online: bool,
    /// The last error that ended a session, credentials removed.
    pub last_error: Option<String>,
    /// Unix ms of the last change of `online`.
    pub since_ms: i64,
    /// Codec parameters of the current (or last) session.
    pub params: Option<Arc<StreamParams>>,
    /// Unix ms of the last health probe (idle on-demand streams), 0 if never.
    pub last_probe_ms: i64,
    /// Tracks the camera offers that are not forwarded (e.g. `audio g726-32`), for the
    /// diagnostics.
    pub unsupported: Vec<String>,
}

/// Counters of one stream; relaxed atomics, read by `/status` and later `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Video keyframes received.
    pub keyframes_in: AtomicU64,
    /// Decode time of the latest video keyframe, 90 kHz (meaningless before the first).
    pub last_key_90k: std::sync::atomic::AtomicI64,
    /// Interval between the last two video keyframes, 90 kHz (0 until known).
    pub keyframe_interval_90k: std::sync::atomic::AtomicI64,
    /// Shortest and longest keyframe interval of this session, 90 kHz (0 until known).
    pub keyframe_interval_min_90k: std::sync::atomic::AtomicI64,
    pub keyframe_interval_max_90k: std::sync::atomic::AtomicI64,
    /// Wall-clock time of the latest video keyframe, Unix ms.
    pub last_key_wall_ms: std::sync::atomic::AtomicI64,
    /// Epoch of the latest video keyframe: intervals are only measured within one.
    last_key_epoch: std::sync::atomic::AtomicI64,
    /// The keyframe findings already logged this session (bit per finding).
    logged_findings: AtomicU64,
    /// The camera's clocks against the server's (see `source::clock`).
    pub clock: ClockStats,
    pub sessions: AtomicU64,
    pub discontinuities: AtomicU64,
    /// RTP packets the camera sent that never arrived (sequence number gaps, UDP).
    pub rtp_packets_lost: AtomicU64,
    /// Camera clock jumps re-stamped onto the timeline within a session (no frame lost).
    pub timestamp_jumps: AtomicU64,
    /// Video frames reordered (B-frames): the depth in use.
    pub reorder_depth: AtomicU64,
    pub mse_viewers: AtomicU64,
    pub frames_dropped_for_slow_viewers: AtomicU64,
    /// Time from a frame's arrival (its last packet read from the camera socket) to its
    /// fragment being written to a viewer's socket: the latency the gateway adds.
    pub mse_send_delay: DelayHistogram,
    /// WebRTC (WHEP) viewers now.
    pub webrtc_viewers: AtomicU64,
    /// Keyframe requests (PLI/FIR) WebRTC viewers sent, each answered from the GOP cache.
    pub webrtc_keyframe_requests: AtomicU64,
    /// NACKs WebRTC viewers sent (answered from the retransmission buffer).
    pub webrtc_nacks: AtomicU64,
    /// As `mse_send_delay`, to a WebRTC viewer's RTP packets.
    pub webrtc_send_delay: DelayHistogram,
}

/// How a camera's clocks compare with the server's, this session.
#[derive(Debug, Default)]
pub struct ClockStats {
    /// Media clock drift, ppm × 1000.
    drift_ppm_milli: std::sync::atomic::AtomicI64,
    /// Camera wall clock minus server wall clock, ms (from RTCP sender reports).
    offset_ms: std::sync::atomic::AtomicI64,
    /// Bit 1: drift known; bit 2: offset known.
    known: AtomicU64,
}

impl ClockStats {
    pub fn set_drift_ppm(&self, ppm: f64) {
        self.drift_ppm_milli
            .store((ppm * 1000.0) as i64, Ordering::Relaxed);
        self.known.fetch_or(1, Ordering::Relaxed);
    }

    pub fn set_offset_ms(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::Relaxed);
        self.known.fetch_or(2, Ordering::Relaxed);
    }

    pub fn drift_ppm(&self) -> Option<f64> {
        (self.known.load(Ordering::Relaxed) & 1 != 0)
            .then(|| self.drift_ppm_milli.load(Ordering::Relaxed) as f64 / 1000.0)
    }

    pub fn offset_ms(&self) -> Option<i64> {
        (self.known.load(Ordering::Relaxed) & 2 != 0)
            .then(|| self.offset_ms.load(Ordering::Relaxed))
    }

    fn reset(&self) {
        self.known.store(0, Ordering::Relaxed);
    }
}

/// One stream's fan-out point.
#[derive(Debug)]
pub struct StreamHub {
    pub id: Uuid,
    ring: Mutex<Shared>,
    /// Version bumped on every publish and on close; consumers wait on it.
    notify: watch::Sender<u64>,
    health: watch::Sender<Health>,
    closed: AtomicBool,
    /// One more than the newest epoch published (0: nothing yet), so a new source task (a
    /// restart, or a fleet node switching where it gets the camera from) continues the
    /// numbering instead of reusing epoch 0.
    next_epoch: std::sync::atomic::AtomicU32,
    pub stats: Stats,
}

/// Why a subscription stopped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("the consumer fell behind and skipped {skipped} frames to the newest keyframe")]
    Lagged { skipped: u64 },
    #[error("the stream was removed")]
    Closed,
}

impl StreamHub {
    pub fn new(id: Uuid, limits: Limits) -> Arc<Self> {
        Arc::new(StreamHub {
            id,
            ring: Mutex::new(Shared {
                ring: Ring::new(limits),
                lazy: lazy::Lazy::default(),
            }),
            notify: watch::Sender::new(0),
            health: watch::Sender::new(Health::default()),
            closed: AtomicBool::new(false),
            next_epoch: std::sync::atomic::AtomicU32::new(0),
            stats: Stats::default(),
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding this lock can only come from a bug in `Ring`; the data is still
        // consistent enough to keep serving, so recover from poisoning.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a frame and wakes consumers.
    /// The first epoch a new source task may use: after every epoch published so far.
    pub fn epoch_base(&self) -> u32 {
        self.next_epoch.load(Ordering::Relaxed)
    }

    pub fn publish(&self, frame: Frame) {
        self.next_epoch
            .fetch_max(frame.epoch.saturating_add(1), Ordering::Relaxed);
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        if frame.is_video_key() {
            let before = self.stats.keyframes_in.fetch_add(1, Ordering::Relaxed);
            let last = self
                .stats
                .last_key_90k
                .swap(frame.dts_90k, Ordering::Relaxed);
            self.stats
                .last_key_wall_ms
                .store(frame.wall_ms, Ordering::Relaxed);
            let last_epoch = self
                .stats
                .last_key_epoch
                .swap(i64::from(frame.epoch), Ordering::Relaxed);
            if before > 0 && last_epoch == i64::from(frame.epoch) && frame.dts_90k > last {
                self.keyframe_interval(frame.dts_90k - last);
            }
        }
        let seq = {
            let mut shared = self.ring();
            shared.lazy.published(&frame);
            shared.ring.push(frame)
        };
        self.notify.send_replace(seq + 1);
    }

    /// Records a keyframe interval; logs a long or irregular one once per session.
    fn keyframe_interval(&self, interval_90k: i64) {
        let st = &self.stats;
        st.keyframe_interval_90k
            .store(interval_90k, Ordering::Relaxed);
        let min = st
            .keyframe_interval_min_90k
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                (m == 0 || interval_90k < m).then_some(interval_90k)
            })
            .map_or_else(|m| m, |_| interval_90k);
        let max = st
            .keyframe_interval_max_90k
            .fetch_max(interval_90k, Ordering::Relaxed)
            .max(interval_90k);
        let Some(found) = crate::hub::diagnostics::keyframe_finding(interval_90k, min, max) else {
            return;
        };
        let bit = if found.code == diagnostics::Code::IrregularKeyframes {
            2
        } else {
            1
        };
        if st.logged_findings.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            tracing::warn!(stream = %self.id, code = %found.code, "{}", found.message);
        }
    }

    /// Notes a track the camera offers that is not forwarded.
    pub fn note_unsupported(&self, what: &str) {
        self.health.send_modify(|h| {
            if !h.unsupported.iter().any(|u| u == what) {
                h.unsupported.push(what.to_owned());
            }
        });
    }

    /// What is worth telling about the camera's configuration now.
    pub fn diagnostics(&self) -> Vec<crate::hub::diagnostics::Diagnostic> {
        let h = self.health.borrow();
        let st = &self.stats;
        let observed = crate::hub::diagnostics::Observed {
            online: h.online,
            params: h.params.as_deref(),
            since_ms: h.since_ms,
            keyframe_interval_90k: st.keyframe_interval_90k.load(Ordering::Relaxed),
            keyframe_interval_min_90k: st.keyframe_interval_min_90k.load(Ordering::Relaxed),
            keyframe_interval_max_90k: st.keyframe_interval_max_90k.load(Ordering::Relaxed),
            last_key_wall_ms: st.last_key_wall_ms.load(Ordering::Relaxed),
            unsupported: &h.unsupported,
            drift_ppm: st.clock.drift_ppm(),
            camera_offset_ms: st.clock.offset_ms(),
            rtp_packets_lost: st.rtp_packets_lost.load(Ordering::Relaxed),
            timestamp_jumps: st.timestamp_jumps.load(Ordering::Relaxed),
        };
        crate::hub::diagnostics::diagnose(&observed, crate::media::unix_ms_now())
    }

    /// Starts reading at the newest keyframe (or at the end, for streams without video).
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        self.subscribe_at(false)
    }

    /// Starts reading at the oldest cached keyframe (or at the end, for streams without video).
    pub fn subscribe_from_oldest_key(self: &Arc<Self>) -> Subscription {
        self.subscribe_at(true)
    }

    fn subscribe_at(self: &Arc<Self>, oldest: bool) -> Subscription {
        let mut rx = self.notify.subscribe();
        rx.borrow_and_update();
        let has_video = self
            .health
            .borrow()
            .params
            .as_ref()
            .is_none_or(|p| p.video.is_some());
        let ring = self.ring();
        let cursor = if has_video && oldest {
            ring.oldest_key_cursor()
        } else if has_video {
            ring.new_cursor()
        } else {
            ring.live_cursor()
        };
        drop(ring);
        Subscription {
            hub: Arc::clone(self),
            cursor,
            rx,
            lazy: None,
        }
    }

    /// The newest cached video keyframe and its sequence number in the ring (which names it:
    /// a new keyframe has a higher one); `None` while there is none (offline, or no video).
    pub fn newest_keyframe(&self) -> Option<(u64, Frame)> {
        self.ring().newest_key().map(|(seq, f)| (seq, f.clone()))
    }

    /// Frames and payload bytes held in the ring now.
    /// Frames and bits per second over the GOP cache (about the last two GOPs).
    pub fn recent_rates(&self) -> Option<(f64, f64)> {
        self.ring().rates()
    }

    pub fn buffered(&self) -> (usize, usize) {
        let r = self.ring();
        (r.len(), r.bytes())
    }

    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Changes on every publish and on close: for a consumer that reads many subscriptions
    /// with [`Subscription::try_recv`] and waits once for all of them.
    pub fn watch_published(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    /// Marks the stream online with the given parameters.
    pub fn set_online(&self, params: Arc<StreamParams>) {
        self.health.send_modify(|h| {
            if !h.online {
                h.since_ms = crate::media::unix_ms_now();
                // A new session: its keyframe pattern is measured afresh.
                let st = &self.stats;
                st.keyframe_interval_min_90k.store(0, Ordering::Relaxed);
                st.keyframe_interval_max_90k.store(0, Ordering::Relaxed);
                st.logged_findings.store(0, Ordering::Relaxed);
                st.clock.reset();
            }
            h.online = true;
            h.last_error = None;
            h.params = Some(params);
        });
    }

    /// Marks the stream offline, remembering why. The ring's frames are retired: a viewer
    /// that joins now waits for fresh video instead of being shown an old GOP as if it were
    /// live, while a lazy consumer (HLS, the recorder) still reads what it had pending; the
    /// frames are freed once it has.
    pub fn set_offline(&self, error: Option<String>) {
        {
            // Lazy consumers (HLS, the recorder) may have frames of the session pending: they
            // are woken to read them, and the frames go once they have.
            let mut shared = self.ring();
            shared.ring.retire();
            shared.lazy.wake_all();
            shared.drop_retired_once_read();
        }
        self.health.send_modify(|h| {
            if h.online {
                h.since_ms = crate::media::unix_ms_now();
            }
            h.online = false;
            if error.is_some() {
                h.last_error = error;
            }
        });
    }

    /// Records a health probe of an idle stream: reachable or not, and why (the error's text
    /// is what `/status` shows).
    pub fn set_probed<E: std::fmt::Display>(&self, result: Result<(), E>) {
        self.health.send_modify(|h| {
            let online = result.is_ok();
            if h.online != online {
                h.since_ms = crate::media::unix_ms_now();
            }
            h.online = online;
            h.last_error = result.err().map(|e| e.to_string());
            h.last_probe_ms = crate::media::unix_ms_now();
        });
    }

    /// Ends every subscription (the stream was removed).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ring().lazy.wake_all();
        self.notify.send_modify(|v| *v += 1);
        self.health.send_modify(|h| h.online = false);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// What the stream's lock guards: the ring and the consumers sleeping on it.
#[derive(Debug)]
struct Shared {
    ring: Ring,
    lazy: lazy::Lazy,
}

impl Shared {
    /// Frees the retired frames once no lazy consumer has them pending.
    fn drop_retired_once_read(&mut self) {
        if self.ring.has_retired() && !self.lazy.any_before(self.ring.live_from()) {
            self.ring.drop_retired();
        }
    }
}

impl std::ops::Deref for Shared {
    type Target = Ring;
    fn deref(&self) -> &Ring {
        &self.ring
    }
}

impl std::ops::DerefMut for Shared {
    fn deref_mut(&mut self) -> &mut Ring {
        &mut self.ring
    }
}

/// A consumer's cursor into a stream's ring.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<StreamHub>,
    cursor: Cursor,
    rx: watch::Receiver<u64>,
    /// Set once the subscription has waited with [`Subscription::recv_when`].
    lazy: Option<LazySub>,
}

#[derive(Debug)]
struct LazySub {
    id: u64,
    notify: Arc<tokio::sync::Notify>,
    last: Option<lazy::Last>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(l) = &self.lazy {
            let mut shared = self.hub.ring();
            shared.lazy.leave(l.id);
            shared.drop_retired_once_read();
        }
    }
}

impl Subscription {
    pub fn hub(&self) -> &Arc<StreamHub> {
        &self.hub
    }

    /// Moves back (or forward) to the newest cached keyframe, to send that GOP again (a
    /// WebRTC viewer's keyframe request); `false` when there is none.
    pub fn rewind_to_newest_key(&mut self) -> bool {
        let fresh = self.hub.ring().new_cursor();
        if fresh.want_key {
            return false;
        }
        self.cursor = fresh;
        true
    }

    /// Moves to the newest keyframe if it is ahead of the cursor; returns the frames skipped.
    pub fn skip_to_newest_key(&mut self) -> u64 {
        let ring = self.hub.ring();
        let fresh = ring.new_cursor();
        if fresh.want_key || fresh.next <= self.cursor.next {
            return 0;
        }
        let skipped = fresh.next - self.cursor.next;
        self.cursor = fresh;
        drop(ring);
        self.hub
            .stats
            .frames_dropped_for_slow_viewers
            .fetch_add(skipped, Ordering::Relaxed);
        skipped
    }

    /// Waits until at least one frame is available, then appends up to `max` frames to `out`.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, RecvError> {
        loop {
            self.rx.borrow_and_update();
            match self.try_recv(out, max) {
                Ok(0) => {
                    if self.rx.changed().await.is_err() {
                        return Err(RecvError::Closed);
                    }
                }
                r => return r,
            }
        }
    }

    /// Like [`Subscription::recv`] for a consumer that acts on whole parts or fragments: waits
    /// until a frame that matters to it (`at`, and see `hub::lazy`) is published, or the
    /// stream went offline with frames pending, then appends up to `max` of the frames
    /// pending. Cancel-safe.
    pub async fn recv_when(
        &mut self,
        out: &mut Vec<Frame>,
        max: usize,
        at: WakeAt,
    ) -> Result<usize, RecvError> {
        loop {
            if self.hub.is_closed() {
                return Err(RecvError::Closed);
            }
            let notify = {
                let mut shared = self.hub.ring();
                let cursor = &mut self.cursor;
                let l = self.lazy.get_or_insert_with(|| {
                    let (id, notify) = shared.lazy.join(cursor.next);
                    LazySub {
                        id,
                        notify,
                        last: None,
                    }
                });
                let mut wait = lazy::Wait::new(at, l.last.clone(), shared.ring.limits());
                let retired_pending =
                    shared.ring.has_retired() && cursor.next < shared.ring.live_from();
                let ready = retired_pending
                    || match shared.ring.since(cursor.next) {
                        // Stops at the first frame that wakes; when none does, every frame
                        // pending has been counted into the wait.
                        Some(mut pending) => pending.any(|f| wait.wakes(f)),
                        None => true, // lagged: the read says so
                    };
                let r = if ready {
                    let before = out.len();
                    let r = read_at(&self.hub, &shared.ring, cursor, out, max);
                    if let Some(f) = out[before..].last() {
                        l.last = Some(lazy::Last {
                            epoch: f.epoch,
                            params: Arc::clone(&f.params),
                        });
                    }
                    Some(r)
                } else {
                    None
                };
                shared.lazy.set(l.id, cursor.next, (!ready).then_some(wait));
                shared.drop_retired_once_read();
                match r {
                    Some(r) => return r,
                    None => Arc::clone(&l.notify),
                }
            };
            notify.notified().await;
        }
    }

    /// Appends up to `max` frames to `out` without waiting: `Ok(0)` when there are none yet.
    pub fn try_recv(&mut self, out: &mut Vec<Frame>, max: usize) -> Result<usize, RecvError> {
        if self.hub.is_closed() {
            return Err(RecvError::Closed);
        }
        let ring = self.hub.ring();
        read_at(&self.hub, &ring, &mut self.cursor, out, max)
    }
}

/// Reads at `cursor` from `ring`, the ring of `hub`, locked.
fn read_at(
    hub: &StreamHub,
    ring: &Ring,
    cursor: &mut Cursor,
    out: &mut Vec<Frame>,
    max: usize,
) -> Result<usize, RecvError> {
    match ring.read(cursor, out, max) {
        ReadOutcome::Frames(n) => Ok(n),
        ReadOutcome::Lagged { skipped } => {
            hub.stats
                .frames_dropped_for_slow_viewers
                .fetch_add(skipped, Ordering::Relaxed);
            Err(RecvError::Lagged { skipped })
        }
        ReadOutcome::Empty => Ok(0),
    }
}

/// The registry of streams that exist now.
#[derive(Debug, Default)]
pub struct Hub {
    streams: RwLock<HashMap<Uuid, Arc<StreamHub>>>,
    limits: Limits,
}

impl Hub {
    pub fn new(limits: Limits) -> Self {
        Hub {
            streams: RwLock::default(),
            limits,
        }
    }

    /// The stream's hub, created if absent.
    pub fn get_or_create(&self, id: Uuid) -> Arc<StreamHub> {
        let mut map = self.streams.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            map.entry(id)
                .or_insert_with(|| StreamHub::new(id, self.limits)),
        )
    }

    pub fn get(&self, id: &Uuid) -> Option<Arc<StreamHub>> {
        self.streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Removes a stream and ends its subscriptions.
    pub fn remove(&self, id: &Uuid) {
        let removed = self
            .streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(s) = removed {
            s.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn frame(i: i64, key: bool) -> Frame {
        Frame::test_video(i, key, Bytes::from_static(b"x"))
    }

    #[tokio::test]
    async fn subscription_wakes_on_publish_and_ends_on_close() {
        let hub = Hub::default();
        let s = hub.get_or_create(Uuid::nil());
        s.publish(frame(0, true));
        let mut sub = s.subscribe();
        let mut out = Vec::new();
        assert_eq!(sub.recv(&mut out, 10).await, Ok(1));
        let s2 = Arc::clone(&s);
        let t = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s2.publish(frame(1, false));
        });
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv(&mut out, 10)).await;
        assert_eq!(got.expect("woken"), Ok(1));
        t.await.expect("join");
        hub.remove(&Uuid::nil());
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv(&mut out, 10)).await;
        assert_eq!(got.expect("woken"), Err(RecvError::Closed));
    }

    /// Wakes for the frame that ends a 200 ms part begun at frame 0.
    fn part_wake() -> WakeAt {
        WakeAt {
            track: crate::media::TrackKind::Video,
            end_90k: 18_000,
            max_wait: Duration::from_secs(10),
        }
    }

    /// Whether `recv_when` returns within 50 ms.
    async fn woken(sub: &mut Subscription, out: &mut Vec<Frame>, at: WakeAt) -> bool {
        tokio::time::timeout(Duration::from_millis(50), sub.recv_when(out, 100, at))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_lazy_subscriber_sleeps_until_its_part_ends_then_gets_every_frame_pending() {
        let hub = Hub::default();
        let s = hub.get_or_create(Uuid::nil());
        let mut sub = s.subscribe();
        let mut out = Vec::new();
        s.publish(frame(0, true));
        assert!(
            woken(&mut sub, &mut out, part_wake()).await,
            "a keyframe wakes"
        );
        assert_eq!(out.len(), 1);
        for i in 1..5 {
            s.publish(frame(i, false));
            assert!(!woken(&mut sub, &mut out, part_wake()).await, "frame {i}");
        }
        assert_eq!(out.len(), 1, "nothing read while asleep");
        s.publish(frame(5, false)); // ends at 216 ms
        assert!(woken(&mut sub, &mut out, part_wake()).await);
        let dts: Vec<i64> = out.iter().map(|f| f.dts_90k / 3600).collect();
        assert_eq!(dts, [0, 1, 2, 3, 4, 5]);
        // Asleep in another task, woken by the publisher.
        let s2 = Arc::clone(&s);
        let t = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s2.publish(frame(6, false));
            s2.publish(frame(7, true));
        });
        let at = WakeAt {
            end_90k: 36_000,
            ..part_wake()
        };
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv_when(&mut out, 100, at));
        assert_eq!(got.await.expect("woken"), Ok(2));
        t.await.expect("join");
        hub.remove(&Uuid::nil());
        let got = tokio::time::timeout(Duration::from_secs(5), sub.recv_when(&mut out, 100, at));
        assert_eq!(got.await.expect("woken"), Err(RecvError::Closed));
    }

    #[tokio::test]
    async fn frames_a_lazy_subscriber_has_pending_when_the_camera_drops_are_not_lost() {
        let hub = Hub::default();
        let s = hub.get_or_create(Uuid::nil());
        let mut lazy = s.subscribe();
        let mut out = Vec::new();
        s.publish(frame(0, true));
        assert!(woken(&mut lazy, &mut out, part_wake()).await);
        s.publish(frame(1, false));
        s.publish(frame(2, false));
        s.set_offline(Some("gone".into()));
        // Not live any more: a new viewer waits for fresh video, a snapshot finds none.
        assert!(s.newest_keyframe().is_none());
        let mut viewer = s.subscribe();
        assert_eq!(viewer.try_recv(&mut Vec::new(), 10), Ok(0));
        // The lazy subscriber is woken for them and reads them; then they are freed.
        assert!(woken(&mut lazy, &mut out, part_wake()).await);
        assert_eq!(out.len(), 3);
        assert_eq!(s.buffered(), (0, 0));
        // Without a lazy subscriber behind, going offline frees the ring at once.
        s.publish(frame(3, true));
        assert!(woken(&mut lazy, &mut out, part_wake()).await);
        s.set_offline(None);
        assert_eq!(s.buffered(), (0, 0));
        // And a lazy subscriber that goes away frees what it had pending.
        s.publish(frame(4, true));
        s.publish(frame(5, false));
        s.set_offline(None);
        assert_eq!(s.buffered().0, 2);
        drop(lazy);
        assert_eq!(s.buffered(), (0, 0));
    }
}

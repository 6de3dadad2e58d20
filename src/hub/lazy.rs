//! Consumers that need not wake for every frame: the HLS muxer and the recorder act on whole
//! parts and fragments, so each says when the next frame could matter ([`WakeAt`]) and sleeps
//! until such a frame is published, instead of waking 25 times a second to buffer frames that
//! stay in the ring anyway. A frame that matters is one that closes the consumer's part or
//! fragment, a video keyframe, a new epoch or new codec parameters; and however those go, a
//! consumer never sleeps through more than a quarter of the ring's caps or `max_wait` of media,
//! so it cannot fall behind the ring.
//!
//! Belongs here: the registry of such consumers of one stream and the rule that decides which
//! frame wakes one. The registry lives inside the stream's ring lock (`hub`), so a frame is
//! never published between a consumer's look at what it has pending and its going to sleep.
//! Does not belong here: the ring itself (`ring`), what the consumers do (`hls`, `archive`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ring::Limits;
use crate::media::{Frame, StreamParams, TrackKind};

/// When a lazy consumer wants to wake: for a frame of `track` that ends after `end_90k` (its
/// part or fragment is then complete), and besides for the frames every consumer must see at
/// once (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeAt {
    pub track: TrackKind,
    /// `i64::MAX`: no time of interest (waiting for a keyframe).
    pub end_90k: i64,
    /// Media the consumer lets pend at most: from the arrival of the first frame it has
    /// pending to the arrival of the one that wakes it.
    pub max_wait: Duration,
}

impl WakeAt {
    /// At `cut` (a segmenter's next cut: lead track and time), or at every frame without one.
    pub fn at_cut(cut: Option<(TrackKind, i64)>, max_wait: Duration) -> WakeAt {
        let (track, end_90k) = cut.unwrap_or((TrackKind::Video, i64::MIN));
        WakeAt {
            track,
            end_90k,
            max_wait,
        }
    }
}

/// The epoch and parameters of the last frame a consumer read: a frame with others wakes it.
#[derive(Clone, Debug)]
pub struct Last {
    pub epoch: u32,
    pub params: Arc<StreamParams>,
}

/// One sleep of one consumer: what it waits for and what it has pending so far. Pure.
#[derive(Debug)]
pub struct Wait {
    at: WakeAt,
    last: Option<Last>,
    frames: usize,
    bytes: usize,
    first_received: Option<Instant>,
    caps: Limits,
}

impl Wait {
    /// A wait on a ring with `limits`; the caps are a quarter of the ring's.
    pub fn new(at: WakeAt, last: Option<Last>, limits: Limits) -> Wait {
        Wait {
            at,
            last,
            frames: 0,
            bytes: 0,
            first_received: None,
            caps: Limits {
                max_frames: (limits.max_frames / 4).max(1),
                max_bytes: (limits.max_bytes / 4).max(1),
            },
        }
    }

    /// Counts one more pending frame; whether the consumer should wake for it.
    pub fn wakes(&mut self, f: &Frame) -> bool {
        self.frames += 1;
        self.bytes += f.data.len();
        let first = *self.first_received.get_or_insert(f.received);
        let news = self
            .last
            .as_ref()
            .is_none_or(|l| l.epoch != f.epoch || !Arc::ptr_eq(&l.params, &f.params));
        news || f.is_video_key()
            || (f.track == self.at.track
                && f.dts_90k.saturating_add(i64::from(f.dur_90k)) > self.at.end_90k)
            || self.frames >= self.caps.max_frames
            || self.bytes >= self.caps.max_bytes
            || f.received.saturating_duration_since(first) >= self.at.max_wait
    }
}

struct Entry {
    id: u64,
    /// Sequence number of the next frame the consumer reads.
    cursor: u64,
    /// Set while the consumer sleeps.
    wait: Option<Wait>,
    notify: Arc<Notify>,
}

/// The lazy consumers of one stream.
#[derive(Default)]
pub struct Lazy {
    entries: Vec<Entry>,
    next_id: u64,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy")
            .field("consumers", &self.entries.len())
            .finish()
    }
}

impl Lazy {
    /// Registers a consumer; returns its id and what wakes it.
    pub fn join(&mut self, cursor: u64) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let notify = Arc::new(Notify::new());
        self.entries.push(Entry {
            id,
            cursor,
            wait: None,
            notify: Arc::clone(&notify),
        });
        (id, notify)
    }

    pub fn leave(&mut self, id: u64) {
        self.entries.retain(|e| e.id != id);
    }

    /// Notes where a consumer reads next, and that it sleeps (`Some`) or not.
    pub fn set(&mut self, id: u64, cursor: u64, wait: Option<Wait>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.cursor = cursor;
            e.wait = wait;
        }
    }

    /// A frame was published: wakes the sleepers it matters to.
    pub fn published(&mut self, f: &Frame) {
        for e in &mut self.entries {
            if e.wait.as_mut().is_some_and(|w| w.wakes(f)) {
                e.wait = None;
                e.notify.notify_one();
            }
        }
    }

    /// Wakes every sleeper (the stream went offline or away).
    pub fn wake_all(&mut self) {
        for e in &mut self.entries {
            e.wait = None;
            e.notify.notify_one();
        }
    }

    /// Whether a consumer has not yet read up to `seq`.
    pub fn any_before(&self, seq: u64) -> bool {
        self.entries.iter().any(|e| e.cursor < seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(n: i64, key: bool) -> Frame {
        Frame::test_video(n, key, Bytes::from_static(&[0; 100]))
    }

    fn wait(end_90k: i64) -> Wait {
        let f = frame(0, true);
        let last = Last {
            epoch: f.epoch,
            params: Arc::clone(&f.params),
        };
        let at = WakeAt {
            track: TrackKind::Video,
            end_90k,
            max_wait: Duration::from_secs(10),
        };
        Wait::new(at, Some(last), Limits::default())
    }

    /// The frame `n` (of 25 fps, 3600 ticks each) that first wakes a wait.
    fn first_waking(mut w: Wait, frames: impl Iterator<Item = Frame>) -> Option<i64> {
        frames
            .map(|f| (f.dts_90k / 3600, w.wakes(&f)))
            .find(|&(_, wakes)| wakes)
            .map(|(n, _)| n)
    }

    #[test]
    fn the_frame_that_ends_past_the_part_wakes_and_none_before_it() {
        // A part from frame 0 with a 200 ms target: frames 0..5 fit, frame 5 ends it.
        let frames = (1..50).map(|n| frame(n, false));
        assert_eq!(first_waking(wait(18_000), frames), Some(5));
    }

    #[test]
    fn a_keyframe_a_new_epoch_or_new_parameters_wake_at_once() {
        let key = (1..50).map(|n| frame(n, n == 3));
        assert_eq!(first_waking(wait(i64::MAX), key), Some(3));
        let epoch = (1..50).map(|n| {
            let mut f = frame(n, false);
            f.epoch = u32::from(n >= 4);
            f
        });
        assert_eq!(first_waking(wait(i64::MAX), epoch), Some(4));
        let params = (1..50).map(|n| {
            let mut f = frame(n, false);
            if n >= 2 {
                f.params = Arc::new((*f.params).clone());
            }
            f
        });
        assert_eq!(first_waking(wait(i64::MAX), params), Some(2));
    }

    #[test]
    fn audio_does_not_end_a_video_part() {
        let mut w = wait(18_000);
        let mut a = frame(10, false);
        a.track = TrackKind::Audio;
        assert!(!w.wakes(&a));
    }

    #[test]
    fn nobody_sleeps_through_a_quarter_of_the_ring_or_max_wait() {
        // Default caps: 1500 frames → wakes at the 375th.
        let frames = (1..1000).map(|n| frame(n, false));
        assert_eq!(first_waking(wait(i64::MAX), frames), Some(375));
        let big = Limits {
            max_bytes: 4000,
            max_frames: 1500,
        };
        let mut w = Wait::new(
            WakeAt {
                track: TrackKind::Video,
                end_90k: i64::MAX,
                max_wait: Duration::from_secs(10),
            },
            None,
            big,
        );
        // No last frame: the first one is news.
        assert!(w.wakes(&frame(1, false)));
        let mut w = wait(i64::MAX);
        w.caps = Limits {
            max_bytes: 1000,
            max_frames: 1500,
        };
        assert_eq!(first_waking(w, (1..50).map(|n| frame(n, false))), Some(10));
        let mut w = wait(i64::MAX);
        w.at.max_wait = Duration::from_millis(300);
        let start = Instant::now();
        let timed = (1..50).map(|n| {
            let mut f = frame(n, false);
            f.received = start + Duration::from_millis(40 * n as u64);
            f
        });
        // The first pending frame arrived at 40 ms: the first at 340 ms or later (frame 9, at
        // 360 ms) wakes.
        assert_eq!(first_waking(w, timed), Some(9));
    }

    #[test]
    fn only_sleepers_are_woken_and_only_once() {
        let mut lazy = Lazy::default();
        let (a, wake_a) = lazy.join(0);
        let (_b, _wake_b) = lazy.join(0);
        lazy.set(a, 1, Some(wait(18_000)));
        lazy.published(&frame(1, false));
        assert!(lazy.entries[0].wait.is_some());
        lazy.published(&frame(5, false));
        assert!(lazy.entries[0].wait.is_none(), "woken");
        // The permit is stored: a consumer that had not yet awaited still wakes.
        let woke = futures::FutureExt::now_or_never(wake_a.notified());
        assert!(woke.is_some());
        assert!(lazy.any_before(1), "b never read");
        lazy.leave(_b);
        assert!(!lazy.any_before(1));
    }
}

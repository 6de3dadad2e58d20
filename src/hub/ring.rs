//! The GOP-aware bounded ring of one stream: pure data structure, no locking, no waking.
//!
//! Frames are numbered by a sequence that never repeats. The ring keeps the latest two GOPs
//! (so a new reader can start at the newest keyframe and a slightly slow one still finds its
//! frames), within hard byte and frame caps whatever the GOP length. Readers are [`Cursor`]s:
//! a position, not a queue, so a reader costs nothing while it is not reading.

use std::collections::VecDeque;

use crate::media::Frame;

/// Memory bounds of a ring.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Never hold more than this many payload bytes.
    pub max_bytes: usize,
    /// Never hold more than this many frames.
    pub max_frames: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Two 2 s GOPs of a 4 Mbit/s camera fit in 2 MB; the caps only bite on very long GOPs.
        Limits {
            max_bytes: 4 << 20,
            max_frames: 1500,
        }
    }
}

/// A reader's position in a ring.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    /// Sequence number of the next frame to read.
    pub next: u64,
    /// Skip frames until a video keyframe (a reader that must start decodable).
    pub want_key: bool,
}

/// What a read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// `n` frames were appended to the output.
    Frames(usize),
    /// Nothing new yet.
    Empty,
    /// The reader fell behind the ring: it was moved to the newest keyframe, skipping `skipped`
    /// frames. The next read continues from there.
    Lagged { skipped: u64 },
}

#[derive(Debug)]
pub struct Ring {
    frames: VecDeque<Frame>,
    /// Sequence number of `frames[0]`.
    first_seq: u64,
    /// Sequence numbers of the video keyframes still in the ring, oldest first (of the live
    /// frames only: none before `live_from`).
    keys: VecDeque<u64>,
    bytes: usize,
    limits: Limits,
    /// Frames before this sequence number are retired ([`Ring::retire`]): readers that
    /// have them pending still read them, new readers never start there.
    live_from: u64,
}

impl Ring {
    pub fn new(limits: Limits) -> Self {
        Ring {
            frames: VecDeque::new(),
            first_seq: 0,
            keys: VecDeque::new(),
            bytes: 0,
            limits,
            live_from: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sequence number of the oldest frame held.
    #[cfg(test)]
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The frames from sequence number `seq` to the newest; `None` when `seq` is no longer
    /// held (a reader there has lagged).
    pub fn since(&self, seq: u64) -> Option<impl Iterator<Item = &Frame>> {
        let from = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        (from <= self.frames.len()).then(|| self.frames.range(from..))
    }

    /// Sequence number the next pushed frame will get.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.frames.len() as u64
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames per second and bits per second over what the ring holds (about two GOPs), or
    /// `None` with less than a tenth of a second of media.
    pub fn rates(&self) -> Option<(f64, f64)> {
        let live = self.live_from.saturating_sub(self.first_seq) as usize;
        let (first, last) = (self.frames.get(live)?, self.frames.back()?);
        let span_s = (last.dts_90k - first.dts_90k) as f64 / 90_000.0;
        if span_s < 0.1 {
            return None;
        }
        let video = self
            .frames
            .range(live..)
            .filter(|f| f.track == crate::media::TrackKind::Video)
            .count();
        // n frames span n − 1 intervals.
        let fps = video.saturating_sub(1) as f64 / span_s;
        Some((fps, self.bytes as f64 * 8.0 / span_s))
    }

    /// Appends a frame and trims the ring; returns the frame's sequence number.
    pub fn push(&mut self, frame: Frame) -> u64 {
        let seq = self.end_seq();
        if frame.is_video_key() {
            self.keys.push_back(seq);
            // Keep the previous GOP and the one this keyframe starts.
            while self.keys.len() > 2 {
                self.keys.pop_front();
                if let Some(&oldest_key) = self.keys.front() {
                    while self.first_seq < oldest_key {
                        self.pop_front();
                    }
                }
            }
        }
        self.bytes += frame.data.len();
        self.frames.push_back(frame);
        while self.frames.len() > 1
            && (self.bytes > self.limits.max_bytes || self.frames.len() > self.limits.max_frames)
        {
            self.pop_front();
        }
        debug_assert!(self.keys.front().is_none_or(|&k| k >= self.first_seq));
        seq
    }

    fn pop_front(&mut self) {
        if let Some(f) = self.frames.pop_front() {
            self.bytes -= f.data.len();
            if self.keys.front() == Some(&self.first_seq) {
                self.keys.pop_front();
            }
            self.first_seq += 1;
        }
    }

    /// Drops every frame (the source went away: nothing in here is live any more). Sequence
    /// numbers continue, so existing cursors simply wait for new frames.
    pub fn clear(&mut self) {
        self.retire();
        self.drop_retired();
    }

    /// Makes every frame held history: new readers start after them (waiting for a keyframe),
    /// a snapshot finds no keyframe, the rates leave them out, but readers that have them
    /// pending still read them. They go with [`Ring::drop_retired`], or as new GOPs push
    /// them out.
    pub fn retire(&mut self) {
        self.live_from = self.end_seq();
        self.keys.clear();
    }

    /// Whether retired frames are still held.
    pub fn has_retired(&self) -> bool {
        self.first_seq < self.live_from
    }

    /// Sequence number of the first frame that is not retired.
    pub fn live_from(&self) -> u64 {
        self.live_from
    }

    pub fn drop_retired(&mut self) {
        while self.first_seq < self.live_from {
            self.pop_front();
        }
    }

    /// The newest video keyframe held, and its sequence number (a snapshot's picture).
    pub fn newest_key(&self) -> Option<(u64, &Frame)> {
        let &k = self.keys.back()?;
        let i = usize::try_from(k.checked_sub(self.first_seq)?).ok()?;
        Some((k, self.frames.get(i)?))
    }

    /// Where a new reader starts: the newest keyframe if the ring holds one, else the end
    /// (waiting for the next keyframe).
    pub fn new_cursor(&self) -> Cursor {
        match self.keys.back() {
            Some(&k) => Cursor {
                next: k,
                want_key: false,
            },
            None => Cursor {
                next: self.end_seq(),
                want_key: true,
            },
        }
    }

    /// Like [`Ring::new_cursor`] but at the oldest keyframe held: every cached GOP (for HLS,
    /// which can list them as segments at once).
    pub fn oldest_key_cursor(&self) -> Cursor {
        match self.keys.front() {
            Some(&k) => Cursor {
                next: k,
                want_key: false,
            },
            None => self.new_cursor(),
        }
    }

    /// Like [`Ring::new_cursor`] but for streams without video: start at the end, no keyframe
    /// needed.
    pub fn live_cursor(&self) -> Cursor {
        Cursor {
            next: self.end_seq(),
            want_key: false,
        }
    }

    /// Appends up to `max` frames at the cursor to `out` and advances the cursor.
    pub fn read(&self, cursor: &mut Cursor, out: &mut Vec<Frame>, max: usize) -> ReadOutcome {
        if cursor.next < self.first_seq {
            let fresh = self.new_cursor();
            let skipped = fresh.next.max(self.first_seq) - cursor.next;
            *cursor = fresh;
            return ReadOutcome::Lagged { skipped };
        }
        let mut n = 0;
        while n < max && cursor.next < self.end_seq() {
            let f = &self.frames[(cursor.next - self.first_seq) as usize];
            cursor.next += 1;
            if cursor.want_key {
                // A stream without video starts anywhere (a subscriber that came before the
                // stream's parameters were known does not know it has no video).
                if !f.is_video_key() && f.params.video.is_some() {
                    continue;
                }
                cursor.want_key = false;
            }
            out.push(f.clone());
            n += 1;
        }
        if n == 0 {
            ReadOutcome::Empty
        } else {
            ReadOutcome::Frames(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(i: i64, key: bool, len: usize) -> Frame {
        Frame::test_video(i, key, Bytes::from(vec![0u8; len]))
    }

    /// Pushes `n` frames with a keyframe every `gop`.
    fn fill(ring: &mut Ring, n: i64, gop: i64) {
        for i in 0..n {
            ring.push(frame(i, i % gop == 0, 100));
        }
    }

    #[test]
    fn keeps_two_gops_and_starts_new_readers_at_the_newest_key() {
        let mut r = Ring::new(Limits::default());
        fill(&mut r, 130, 50); // keys at 0, 50, 100
        assert_eq!(
            r.len(),
            80,
            "frames 50..130: the previous GOP and the current one"
        );
        let mut c = r.new_cursor();
        assert_eq!(c.next, 100);
        let mut out = Vec::new();
        assert_eq!(r.read(&mut c, &mut out, 1000), ReadOutcome::Frames(30));
        assert!(out[0].is_video_key());
        assert_eq!(r.read(&mut c, &mut out, 1000), ReadOutcome::Empty);
    }

    #[test]
    fn the_newest_key_is_the_last_keyframe_pushed_until_the_ring_is_cleared() {
        let mut r = Ring::new(Limits::default());
        assert!(r.newest_key().is_none());
        fill(&mut r, 130, 50);
        let (seq, f) = r.newest_key().expect("a key");
        assert_eq!(seq, 100);
        assert_eq!(f.dts_90k, 100 * 3600);
        assert!(f.is_video_key());
        r.clear();
        assert!(r.newest_key().is_none());
    }

    #[test]
    fn reader_without_a_key_in_the_ring_waits_for_one() {
        let mut r = Ring::new(Limits::default());
        r.push(frame(0, false, 10));
        let mut c = r.new_cursor();
        assert!(c.want_key);
        r.push(frame(1, false, 10));
        r.push(frame(2, true, 10));
        r.push(frame(3, false, 10));
        let mut out = Vec::new();
        assert_eq!(r.read(&mut c, &mut out, 10), ReadOutcome::Frames(2));
        assert_eq!(out[0].dts_90k, 2 * 3600);
    }

    #[test]
    fn slow_reader_lags_to_the_newest_key_and_is_told_how_much() {
        let mut r = Ring::new(Limits::default());
        fill(&mut r, 10, 50);
        let mut c = r.new_cursor();
        assert_eq!(c.next, 0);
        let mut out = Vec::new();
        r.read(&mut c, &mut out, 5);
        fill(&mut r, 200, 50); // sequence 10..210, keys at seq 10, 60, 110, 160
        let outcome = r.read(&mut c, &mut out, 5);
        assert_eq!(outcome, ReadOutcome::Lagged { skipped: 155 });
        out.clear();
        assert_eq!(r.read(&mut c, &mut out, 1), ReadOutcome::Frames(1));
        assert!(out[0].is_video_key());
    }

    #[test]
    fn byte_and_frame_caps_bound_memory_even_without_keys() {
        let mut r = Ring::new(Limits {
            max_bytes: 10_000,
            max_frames: 50,
        });
        for i in 0..1000 {
            r.push(frame(i, i == 0, 300));
        }
        assert!(r.bytes() <= 10_000);
        assert!(r.len() <= 50);
        // The key was trimmed away: new readers wait for the next one.
        assert!(r.new_cursor().want_key);
        // A single frame larger than the cap is still kept (the newest frame is never dropped).
        r.push(frame(1000, true, 20_000));
        assert_eq!(r.len(), 1);
        assert_eq!(r.new_cursor().next, r.end_seq() - 1);
    }

    #[test]
    fn clear_keeps_cursors_valid_and_new_readers_wait_for_a_key() {
        let mut r = Ring::new(Limits::default());
        fill(&mut r, 20, 10);
        let mut c = r.new_cursor();
        let mut out = Vec::new();
        r.read(&mut c, &mut out, 100);
        r.clear();
        assert!(r.is_empty() && r.bytes() == 0);
        assert!(r.new_cursor().want_key);
        assert_eq!(
            r.read(&mut c, &mut out, 100),
            ReadOutcome::Empty,
            "no lag after clear"
        );
        r.push(frame(20, true, 10));
        out.clear();
        assert_eq!(r.read(&mut c, &mut out, 100), ReadOutcome::Frames(1));
    }

    #[test]
    fn retired_frames_are_read_by_readers_that_had_them_pending_and_by_no_new_reader() {
        let mut r = Ring::new(Limits::default());
        fill(&mut r, 20, 10);
        let mut behind = r.new_cursor(); // at the key of seq 10
        r.retire();
        assert!(r.has_retired());
        assert!(r.newest_key().is_none(), "no snapshot of the old session");
        assert!(r.rates().is_none());
        let fresh = r.oldest_key_cursor();
        assert!(fresh.want_key && fresh.next == 20, "{fresh:?}");
        let mut out = Vec::new();
        assert_eq!(r.read(&mut behind, &mut out, 100), ReadOutcome::Frames(10));
        assert_eq!(out[0].dts_90k, 10 * 3600);
        // A new session: its first keyframe is where new readers start.
        r.push(frame(20, true, 10));
        assert_eq!(r.new_cursor().next, 20);
        r.drop_retired();
        assert!(!r.has_retired());
        assert_eq!((r.first_seq(), r.len(), r.bytes()), (20, 1, 10));
    }

    #[test]
    fn retired_frames_leave_as_new_gops_come_without_being_dropped() {
        let mut r = Ring::new(Limits::default());
        fill(&mut r, 20, 10);
        r.retire();
        for i in 20..50 {
            r.push(frame(i, i % 10 == 0, 100));
        }
        assert!(!r.has_retired(), "two new GOPs pushed the old ones out");
        assert_eq!(r.first_seq(), 30);
    }

    #[test]
    fn since_lists_pending_frames_or_none_once_they_are_gone() {
        let mut r = Ring::new(Limits::default());
        fill(&mut r, 130, 50); // frames 50..130 held
        assert_eq!(r.since(120).map(|f| f.count()), Some(10));
        assert_eq!(r.since(130).map(|f| f.count()), Some(0));
        assert!(r.since(10).is_none());
    }

    #[test]
    fn sequence_numbers_never_repeat() {
        let mut r = Ring::new(Limits {
            max_bytes: 1000,
            max_frames: 3,
        });
        let seqs: Vec<u64> = (0..10).map(|i| r.push(frame(i, true, 1))).collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
        assert_eq!(r.end_seq(), 10);
    }
}

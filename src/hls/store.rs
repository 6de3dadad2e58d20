//! The in-memory HLS window of one stream: segments and parts as the segmenter made them, the
//! init segments they use, the rendered playlist, and a version that requests wait on.
//!
//! [`Window`] is pure (events in, lookups out); [`Store`] shares it between the stream's HLS
//! task and HTTP requests. Media numbers and the discontinuity count never go back while the
//! process runs, even when the window is emptied.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use super::playlist::{self, View};
use crate::mp4::segmenter::{Event, Part, Targets};

/// Segments kept after they leave the playlist, for clients that read an older playlist.
const RETAINED: usize = 3;
/// Init segments kept (several only after codec changes).
const INITS: usize = 4;

/// One segment: complete, or still being written.
#[derive(Clone, Debug)]
pub struct Segment {
    pub msn: u64,
    pub init_id: u32,
    pub discontinuity: bool,
    pub pdt_ms: i64,
    /// Set when complete.
    pub duration_90k: i64,
    /// The parts; those in the file (the first `in_file`) without their bytes.
    pub parts: Vec<Part>,
    /// The file the segment's older parts are written to (`memory_ms`), once it has any.
    pub file: Option<PathBuf>,
    /// Leading parts whose bytes are in `file` (and no longer in memory).
    in_file: usize,
    /// Leading parts handed to the writer (at least `in_file`).
    pending: usize,
}

/// Parts of one segment to append to its file: parts `first..first + chunks.len()` start at
/// `offset` bytes into it.
#[derive(Debug)]
pub struct SpillJob {
    pub msn: u64,
    pub first: usize,
    pub offset: u64,
    /// Per part, its bytes.
    pub chunks: Vec<Vec<Bytes>>,
    /// When these are the last parts of a complete segment: its length, where its file ends
    /// (a file written over may be longer).
    pub end: Option<u64>,
}

impl Segment {
    /// A segment that starts now and has no parts yet.
    pub fn new(msn: u64, init_id: u32, discontinuity: bool, pdt_ms: i64) -> Segment {
        Segment {
            msn,
            init_id,
            discontinuity,
            pdt_ms,
            duration_90k: 0,
            parts: Vec::new(),
            file: None,
            in_file: 0,
            pending: 0,
        }
    }

    /// The segment's bytes: its parts back to back.
    pub fn chunks(&self) -> Vec<Bytes> {
        self.part_chunks(0..self.parts.len())
    }

    fn part_chunks(&self, parts: std::ops::Range<usize>) -> Vec<Bytes> {
        self.parts[parts]
            .iter()
            .flat_map(|p| p.chunks.iter().cloned())
            .collect()
    }

    fn bytes_of(&self, parts: std::ops::Range<usize>) -> u64 {
        self.parts[parts].iter().map(|p| p.len as u64).sum()
    }

    /// Where the bytes of parts `parts` (all: `..`) are: in the file, in memory, or the first
    /// ones in the file and the rest in memory.
    fn media(&self, parts: std::ops::Range<usize>) -> Media {
        let split = self.in_file.clamp(parts.start, parts.end);
        match &self.file {
            Some(path) if split > parts.start => Media::File {
                path: path.clone(),
                offset: self.bytes_of(0..parts.start),
                len: self.bytes_of(parts.start..split),
                tail: self.part_chunks(split..parts.end),
            },
            _ => Media::Memory(self.part_chunks(parts)),
        }
    }
}

/// Where the bytes of a segment or part are.
#[derive(Debug)]
pub enum Media {
    Memory(Vec<Bytes>),
    /// `len` bytes at `offset` in a file (parts written out by `memory_ms`), then `tail` from
    /// memory (the newest parts of a segment still being written out).
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
        tail: Vec<Bytes>,
    },
}

/// How a window is shaped.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    pub window_size: usize,
    pub low_latency: bool,
    pub targets: Targets,
}

/// Where a lookup stands.
#[derive(Debug)]
pub enum Lookup<T> {
    Ready(T),
    /// Not yet produced, but it is the next thing to be: worth waiting for.
    Soon,
    Gone,
}

impl<T> Lookup<T> {
    /// `None` while the answer is still to come, for waiting on it.
    pub fn settled(self) -> Option<Self> {
        match self {
            Lookup::Soon => None,
            other => Some(other),
        }
    }
}

/// The state of one stream's HLS output.
pub struct Window {
    name: String,
    token: String,
    cfg: WindowConfig,
    inits: VecDeque<(u32, Bytes)>,
    /// Complete segments, oldest first; the last `window_size` are listed.
    segments: VecDeque<Segment>,
    open: Option<Segment>,
    next_msn: u64,
    discontinuity_sequence: u64,
    target_s: u64,
    rendered: Option<Bytes>,
    /// Files of segments that left the window, to delete.
    garbage: Vec<PathBuf>,
}

fn round_s(d_90k: i64) -> u64 {
    ((d_90k.max(0) + 45_000) / 90_000) as u64
}

impl Window {
    pub fn new(name: String, token: String, cfg: WindowConfig) -> Self {
        let target_s = round_s(cfg.targets.segment_90k).max(1);
        Window {
            name,
            token,
            cfg,
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            open: None,
            next_msn: 0,
            discontinuity_sequence: 0,
            target_s,
            rendered: None,
            garbage: Vec::new(),
        }
    }

    /// Applies the segmenter's events; returns whether anything changed.
    pub fn apply(&mut self, events: impl IntoIterator<Item = Event>) -> bool {
        let mut changed = false;
        for e in events {
            changed = true;
            match e {
                Event::Init { id, bytes, .. } => {
                    self.inits.push_back((id, bytes));
                    if self.inits.len() > INITS {
                        self.inits.pop_front();
                    }
                }
                Event::SegmentStart {
                    discontinuity,
                    init_id,
                    pdt_ms,
                } => {
                    self.open = Some(Segment::new(self.next_msn, init_id, discontinuity, pdt_ms));
                    self.next_msn += 1;
                }
                Event::Part(p) => {
                    if let Some(o) = &mut self.open {
                        o.parts.push(p);
                    }
                }
                Event::SegmentEnd {
                    duration_90k,
                    gop_90k,
                } => {
                    if let Some(mut seg) = self.open.take() {
                        seg.duration_90k = duration_90k;
                        self.complete(seg, gop_90k);
                    }
                }
            }
        }
        if changed {
            self.rendered = None;
        }
        changed
    }

    fn complete(&mut self, seg: Segment, gop_90k: Option<i64>) {
        // Honest target duration: the longest segment so far, and what the segment target
        // becomes once rounded up to whole GOPs; it never shrinks.
        let mut target = round_s(seg.duration_90k);
        if let Some(g) = gop_90k.filter(|g| *g > 0) {
            let t = self.cfg.targets.segment_90k;
            target = target.max(round_s((t + g - 1) / g * g));
        }
        self.target_s = self.target_s.max(target);
        if seg.parts.is_empty() {
            return;
        }
        self.segments.push_back(seg);
        let n = self.segments.len();
        if n > self.cfg.window_size && self.segments[n - 1 - self.cfg.window_size].discontinuity {
            self.discontinuity_sequence += 1;
        }
        while self.segments.len() > self.cfg.window_size + RETAINED {
            if let Some(path) = self.segments.pop_front().and_then(|s| s.file) {
                self.garbage.push(path);
            }
        }
    }

    /// Drops every segment (the stream has been gone longer than the window lasts: what it
    /// holds is no longer live). Numbers carry on.
    pub fn clear(&mut self) {
        let listed = self.listed_range();
        self.discontinuity_sequence += self
            .segments
            .range(listed)
            .filter(|s| s.discontinuity)
            .count() as u64;
        self.garbage
            .extend(self.segments.drain(..).filter_map(|s| s.file));
        if let Some(o) = self.open.take() {
            // Its number is spent; a client waiting for it gets the next segment.
            self.discontinuity_sequence += u64::from(o.discontinuity);
            self.garbage.extend(o.file);
        }
        self.rendered = None;
    }

    fn listed_range(&self) -> std::ops::Range<usize> {
        self.segments.len().saturating_sub(self.cfg.window_size)..self.segments.len()
    }

    /// A playlist can be served: at least one complete segment is listed.
    pub fn ready(&self) -> bool {
        !self.segments.is_empty()
    }

    pub fn target_s(&self) -> u64 {
        self.target_s
    }

    pub fn part_target(&self) -> std::time::Duration {
        std::time::Duration::from_micros((self.cfg.targets.part_90k.max(0) as u64) * 100 / 9)
    }

    pub fn low_latency(&self) -> bool {
        self.cfg.low_latency
    }

    /// The playlist text (rendered once per change).
    pub fn playlist(&mut self) -> Bytes {
        if let Some(r) = &self.rendered {
            return r.clone();
        }
        let b = Bytes::from(playlist::render(
            &self.view(self.cfg.low_latency, &self.token),
        ));
        self.rendered = Some(b.clone());
        b
    }

    /// The playlist without LL-HLS tags and with bare names, for the disk mirror.
    pub fn playlist_plain(&self) -> Bytes {
        Bytes::from(playlist::render(&self.view(false, "")))
    }

    fn view<'a>(&'a self, low_latency: bool, token: &'a str) -> View<'a> {
        View {
            name: &self.name,
            token,
            low_latency,
            target_s: self.target_s,
            part_target_90k: self.cfg.targets.part_90k,
            discontinuity_sequence: self.discontinuity_sequence,
            segments: self.segments.range(self.listed_range()).collect(),
            open: self.open.as_ref().filter(|_| low_latency),
            next_msn: self.next_msn,
        }
    }

    /// The stream id as it starts every file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Init segments and complete segments by file name, for the disk mirror.
    pub fn files(&self) -> Vec<(String, Vec<Bytes>)> {
        let inits = self
            .inits
            .iter()
            .map(|(id, b)| (playlist::init_name(&self.name, *id), vec![b.clone()]));
        let segments = self
            .segments
            .iter()
            .filter(|s| s.file.is_none())
            .map(|s| (playlist::segment_name(&self.name, s.msn), s.chunks()));
        inits.chain(segments).collect()
    }

    /// The last media sequence number a playlist lists (open segment included).
    pub fn last_msn(&self) -> Option<u64> {
        self.next_msn.checked_sub(1)
    }

    /// A blocking reload's condition (`_HLS_msn`, `_HLS_part`): the playlist holds that part
    /// (or that segment complete), or something later.
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        match (&self.open, part) {
            (Some(o), Some(p)) if o.msn == msn => o.parts.len() > p,
            (Some(o), _) => msn < o.msn,
            (None, _) => msn < self.next_msn,
        }
    }

    /// Where complete segment `msn` is in `segments`.
    fn position(&self, msn: u64) -> Option<usize> {
        let first = self.segments.front()?.msn;
        let i = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.segments.get(i).filter(|s| s.msn == msn).map(|_| i)
    }

    fn find(&self, msn: u64) -> Option<&Segment> {
        self.segments.get(self.position(msn)?)
    }

    pub fn init(&self, id: u32) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, b)| b.clone())
    }

    pub fn segment(&self, msn: u64) -> Lookup<Media> {
        if let Some(s) = self.find(msn) {
            return Lookup::Ready(s.media(0..s.parts.len()));
        }
        match &self.open {
            Some(o) if o.msn == msn => Lookup::Soon,
            None if msn == self.next_msn => Lookup::Soon,
            _ => Lookup::Gone,
        }
    }

    pub fn part(&self, msn: u64, part: usize) -> Lookup<Media> {
        let seg = match &self.open {
            Some(o) if o.msn == msn => {
                if part == o.parts.len() {
                    return Lookup::Soon;
                }
                Some(o)
            }
            Some(o) if msn == o.msn + 1 && part == 0 => return Lookup::Soon,
            None if msn == self.next_msn && part == 0 => return Lookup::Soon,
            _ => self.find(msn),
        };
        match seg.filter(|s| part < s.parts.len()) {
            Some(s) => Lookup::Ready(s.media(part..part + 1)),
            None => Lookup::Gone,
        }
    }

    /// Parts older than the newest `keep` (complete segments and the open one, oldest first)
    /// that are only in memory, to be appended to their segments' files, one job per segment;
    /// nothing until at least `batch` parts are due (fewer, larger writes). Handed-out parts
    /// are pending until [`Window::spilled`] or [`Window::spill_failed`].
    pub fn spill_jobs(&mut self, keep: usize, batch: usize) -> Vec<SpillJob> {
        let total: usize = self
            .segments
            .iter()
            .chain(&self.open)
            .map(|s| s.parts.len())
            .sum();
        // Per segment, oldest first: the parts that are due (all but the newest `keep` overall).
        let mut before = 0usize;
        let uptos: Vec<usize> = self
            .segments
            .iter()
            .chain(&self.open)
            .map(|s| {
                let upto = total
                    .saturating_sub(keep)
                    .saturating_sub(before)
                    .min(s.parts.len());
                before += s.parts.len();
                upto
            })
            .collect();
        let due: usize = self
            .segments
            .iter()
            .chain(&self.open)
            .zip(&uptos)
            .map(|(s, &upto)| upto.saturating_sub(s.pending))
            .sum();
        if due == 0 || due < batch.max(1) {
            return Vec::new();
        }
        let mut jobs = Vec::new();
        let complete = self.segments.len();
        for (i, (s, &upto)) in self
            .segments
            .iter_mut()
            .chain(self.open.as_mut())
            .zip(&uptos)
            .enumerate()
        {
            if upto > s.pending {
                let first = s.pending;
                let whole = i < complete && upto == s.parts.len();
                jobs.push(SpillJob {
                    msn: s.msn,
                    first,
                    offset: s.bytes_of(0..first),
                    chunks: s.parts[first..upto]
                        .iter()
                        .map(|p| p.chunks.clone())
                        .collect(),
                    end: whole.then(|| s.bytes_of(0..upto)),
                });
                s.pending = upto;
            }
        }
        jobs
    }

    fn segment_mut(&mut self, msn: u64) -> Option<&mut Segment> {
        if self.open.as_ref().is_some_and(|o| o.msn == msn) {
            return self.open.as_mut();
        }
        let i = self.position(msn)?;
        self.segments.get_mut(i)
    }

    /// Parts `..upto` of segment `msn` are in `path` now: their bytes leave memory. `false` if
    /// the segment left the window meanwhile (the caller deletes the file).
    pub fn spilled(&mut self, msn: u64, upto: usize, path: PathBuf) -> bool {
        let Some(seg) = self
            .segment_mut(msn)
            .filter(|s| s.pending >= upto && upto <= s.parts.len())
        else {
            return false;
        };
        for p in &mut seg.parts[seg.in_file.min(upto)..upto] {
            p.chunks = Vec::new();
        }
        seg.in_file = seg.in_file.max(upto);
        seg.file = Some(path);
        true
    }

    /// Writing parts of segment `msn` out failed: what was not written stays in memory (and
    /// may be tried again from the last part written).
    pub fn spill_failed(&mut self, msn: u64) {
        if let Some(s) = self.segment_mut(msn) {
            s.pending = s.in_file;
        }
    }

    /// Files of segments that left the window since the last call.
    pub fn take_garbage(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.garbage)
    }
}

/// A window shared between its HLS task and requests, with a version to wait on and a record
/// of when HLS was last asked for (the task only muxes while someone is).
pub struct Store {
    window: Mutex<Window>,
    version: watch::Sender<u64>,
    last_request_ms: AtomicI64,
    requested: Notify,
    /// Who is watching (clients polling the playlist).
    pub sessions: super::sessions::Sessions,
}

impl Store {
    pub fn new(window: Window) -> Self {
        Store {
            window: Mutex::new(window),
            version: watch::Sender::new(0),
            last_request_ms: AtomicI64::new(0),
            requested: Notify::new(),
            sessions: super::sessions::Sessions::default(),
        }
    }

    /// Records an HLS request and wakes an idle muxer.
    pub fn touch(&self) {
        self.last_request_ms
            .store(crate::media::unix_ms_now(), Ordering::Relaxed);
        self.requested.notify_one();
    }

    /// Completes at the next request (or at once if one came since the last wait).
    pub async fn requested(&self) {
        self.requested.notified().await;
    }

    /// Someone asked for HLS within [`super::IDLE`]: the muxer runs.
    pub fn active(&self) -> bool {
        self.idle_ms() < super::IDLE.as_millis() as i64
    }

    /// Milliseconds since the last request.
    pub fn idle_ms(&self) -> i64 {
        crate::media::unix_ms_now() - self.last_request_ms.load(Ordering::Relaxed)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies events and wakes waiting requests.
    pub fn apply(&self, events: &mut Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let changed = self.lock().apply(events.drain(..));
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }

    pub fn clear(&self) {
        self.lock().clear();
        self.version.send_modify(|v| *v += 1);
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

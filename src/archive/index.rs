//! The in-memory index of one stream's archive: segments in start order, with real durations,
//! sizes, where they are stored and why each one ended. Pure: no I/O, no clocks.
//!
//! Ranges and gaps are answered from here (1 M segments in milliseconds: see
//! `benches/archive_index.rs`), never by listing a directory or bucket per request.

use serde::Serialize;
use uuid::Uuid;

/// Why a segment ended; the cause of the gap after it, if there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Cut at `ms_per_file`: the next segment follows without a gap.
    Rotation,
    /// The camera went offline (or its connection broke).
    CameraOffline,
    /// A timestamp jump or new codec parameters: a new file starts at once.
    Discontinuity,
    /// The recorder fell behind the live ring and skipped frames.
    RecorderLagged,
    /// The gateway stopped (or the stream was disabled) and closed the file cleanly.
    ServerStopped,
    /// The gateway was killed; the file was repaired at the next start.
    ServerCrashed,
    /// Writing failed (disk full, permissions).
    WriteError,
    /// In a fleet: the camera moved to another node, which records on (make-before-break).
    Handoff,
    /// In a fleet: the node recording the camera died; another node took it over.
    NodeFailed,
    /// Not known (a file from another tool, or written before this index existed).
    Unknown,
}

/// Where a segment's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// A file in the stream's local directory (for S3 streams: still in the upload spool).
    Local,
    /// An object in the stream's bucket.
    Remote,
}

/// One archive file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// The `<unix-seconds>` of its name (may differ from `start_ms / 1000` by a second when
    /// two files would otherwise share a name).
    pub name_s: i64,
    /// Wall-clock time of its first frame, Unix ms.
    pub start_ms: i64,
    /// Real media duration.
    pub duration_ms: i64,
    pub bytes: u64,
    pub location: Location,
    pub end: EndReason,
}

impl Segment {
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.duration_ms
    }

    /// `<uuid>_<unix-seconds>.mp4`, the original's name.
    pub fn file_name(&self, stream: &Uuid) -> String {
        file_name(stream, self.name_s)
    }
}

/// `<uuid>_<unix-seconds>.mp4`.
pub fn file_name(stream: &Uuid, name_s: i64) -> String {
    format!("{stream}_{name_s}.mp4")
}

/// Parses an archive file name of `stream` as the original does (the text after the last `_`
/// must be an integer); anything else is not an archive file.
pub fn parse_file_name(stream: &Uuid, name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".mp4")?;
    if !stem.starts_with(&stream.to_string()) {
        return None;
    }
    stem.rsplit_once('_')?.1.parse().ok()
}

/// A continuous stretch of recorded video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A hole between two segments, with what caused it when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub start_ms: i64,
    pub end_ms: i64,
    pub cause: EndReason,
}

/// One stream's segments, sorted by start.
#[derive(Clone, Debug, Default)]
pub struct StreamIndex {
    segments: Vec<Segment>,
    bytes: u64,
}

impl StreamIndex {
    /// Builds an index from segments in any order.
    pub fn from_segments(mut segments: Vec<Segment>) -> Self {
        segments.sort_by_key(|s| (s.start_ms, s.name_s));
        segments.dedup_by_key(|s| s.name_s);
        let bytes = segments.iter().map(|s| s.bytes).sum();
        StreamIndex { segments, bytes }
    }

    /// Adds (or replaces, by name) a segment.
    pub fn insert(&mut self, seg: Segment) {
        self.remove(seg.name_s);
        let at = self
            .segments
            .partition_point(|s| (s.start_ms, s.name_s) < (seg.start_ms, seg.name_s));
        self.bytes += seg.bytes;
        self.segments.insert(at, seg);
    }

    /// Removes a segment by name; returns it.
    pub fn remove(&mut self, name_s: i64) -> Option<Segment> {
        let i = self.position(name_s)?;
        let seg = self.segments.remove(i);
        self.bytes -= seg.bytes;
        Some(seg)
    }

    fn position(&self, name_s: i64) -> Option<usize> {
        // A file's name is its start second, or a later free one when seconds collide, so it
        // lies within the hour of segments that start at or before its second.
        let to = self
            .segments
            .partition_point(|s| s.start_ms < (name_s + 1) * 1000);
        let from = self
            .segments
            .partition_point(|s| s.start_ms < (name_s - 3600) * 1000);
        self.segments[from..to]
            .iter()
            .rposition(|s| s.name_s == name_s)
            .map(|i| from + i)
    }

    pub fn get(&self, name_s: i64) -> Option<&Segment> {
        self.position(name_s).map(|i| &self.segments[i])
    }

    /// Sets why the newest segment ended, unless it is already known to have ended for a
    /// reason of its own (a gap after a rotation or an unknown end gets the real cause);
    /// the segment changed, if any.
    pub fn mark_last_end(&mut self, end: EndReason) -> Option<Segment> {
        let last = self.segments.last_mut()?;
        if matches!(last.end, EndReason::Rotation | EndReason::Unknown) {
            last.end = end;
            return Some(last.clone());
        }
        None
    }

    /// Marks a segment as uploaded.
    pub fn set_location(&mut self, name_s: i64, location: Location) {
        if let Some(i) = self.position(name_s) {
            self.segments[i].location = location;
        }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.bytes
    }

    /// Segments that overlap `[start_ms, end_ms)`, in order.
    pub fn overlapping(&self, start_ms: i64, end_ms: i64) -> &[Segment] {
        // Segments are sorted by start and do not overlap much, so the first one that can
        // reach `start_ms` is found by binary search on the end of its predecessor.
        let from = self.segments.partition_point(|s| s.end_ms() <= start_ms);
        let to = self.segments.partition_point(|s| s.start_ms < end_ms);
        if from >= to {
            return &[];
        }
        &self.segments[from..to]
    }

    /// Continuous stretches: segments closer than `tolerance_ms` are joined.
    pub fn spans(&self, tolerance_ms: i64) -> Vec<Span> {
        self.spans_in(&self.segments, tolerance_ms)
    }

    fn spans_in(&self, segments: &[Segment], tolerance_ms: i64) -> Vec<Span> {
        let mut out: Vec<Span> = Vec::new();
        for s in segments {
            match out.last_mut() {
                Some(last) if s.start_ms <= last.end_ms + tolerance_ms => {
                    last.end_ms = last.end_ms.max(s.end_ms());
                }
                _ => out.push(Span {
                    start_ms: s.start_ms,
                    end_ms: s.end_ms(),
                }),
            }
        }
        out
    }

    /// The gaps between the segments overlapping `[start_ms, end_ms)`, with their causes.
    pub fn gaps(&self, start_ms: i64, end_ms: i64, tolerance_ms: i64) -> Vec<Gap> {
        let segs = self.overlapping(start_ms, end_ms);
        segs.windows(2)
            .filter(|w| w[1].start_ms > w[0].end_ms() + tolerance_ms)
            .map(|w| Gap {
                start_ms: w[0].end_ms(),
                end_ms: w[1].start_ms,
                cause: w[0].end,
            })
            .collect()
    }

    /// A name for a new segment starting at `start_ms`: its Unix second, or the next free one
    /// if a segment already has that name (the original would overwrite it).
    pub fn free_name(&self, start_ms: i64) -> i64 {
        let mut name = start_ms.div_euclid(1000);
        while self.get(name).is_some() {
            name += 1;
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_s: i64, dur_s: i64, end: EndReason) -> Segment {
        Segment {
            name_s: start_s,
            start_ms: start_s * 1000,
            duration_ms: dur_s * 1000,
            bytes: 100,
            location: Location::Local,
            end,
        }
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_not_segments() {
        let id = Uuid::parse_str("0742091c-19cd-4658-9b4f-5320da160f45").expect("uuid");
        let name = file_name(&id, 1_734_690_053);
        assert_eq!(name, "0742091c-19cd-4658-9b4f-5320da160f45_1734690053.mp4");
        assert_eq!(parse_file_name(&id, &name), Some(1_734_690_053));
        assert_eq!(parse_file_name(&id, "other_1.mp4"), None);
        assert_eq!(parse_file_name(&id, &format!("{id}_x.mp4")), None);
        assert_eq!(parse_file_name(&id, &format!("{id}_5.mp4.part")), None);
    }

    #[test]
    fn spans_join_within_tolerance_and_gaps_keep_their_cause() {
        let idx = StreamIndex::from_segments(vec![
            seg(100, 60, EndReason::Rotation),
            seg(0, 60, EndReason::Rotation),
            seg(60, 40, EndReason::CameraOffline),
            seg(200, 30, EndReason::ServerStopped),
        ]);
        assert_eq!(
            idx.spans(500),
            vec![
                Span {
                    start_ms: 0,
                    end_ms: 160_000
                },
                Span {
                    start_ms: 200_000,
                    end_ms: 230_000
                }
            ]
        );
        // A 1 ms hole is bridged by any tolerance, a 40 s one is not.
        let gaps = idx.gaps(0, 300_000, 500);
        assert_eq!(
            gaps,
            vec![Gap {
                start_ms: 160_000,
                end_ms: 200_000,
                cause: EndReason::Rotation
            }]
        );
        assert_eq!(idx.overlapping(59_000, 61_000).len(), 2);
        assert_eq!(idx.overlapping(170_000, 180_000).len(), 0);
        assert_eq!(idx.overlapping(0, 1).len(), 1);
    }

    #[test]
    fn insert_remove_keep_order_bytes_and_names_unique() {
        let mut idx = StreamIndex::default();
        idx.insert(seg(10, 5, EndReason::Rotation));
        idx.insert(seg(0, 5, EndReason::Rotation));
        assert_eq!(idx.segments()[0].start_ms, 0);
        assert_eq!(idx.total_bytes(), 200);
        assert_eq!(idx.free_name(10_400), 11);
        assert_eq!(idx.free_name(12_000), 12);
        assert!(idx.remove(10).is_some());
        assert!(idx.remove(10).is_none());
        assert_eq!(idx.total_bytes(), 100);
        idx.set_location(0, Location::Remote);
        assert_eq!(idx.get(0).map(|s| s.location), Some(Location::Remote));
    }
}

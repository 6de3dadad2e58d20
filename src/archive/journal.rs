//! The sidecar journal: one small append-only file per stream and directory,
//! `<dir>/<uuid>.journal`, holding what a file name cannot say (the exact start, the real
//! duration, why the file ended, whether it was uploaded), so startup rebuilds the index from
//! a directory or bucket listing without opening every file.
//!
//! One JSON object per line: a closed file, an upload, or a deletion. Lines that do not parse
//! (a torn last line after a crash) are skipped. The journal is rewritten compactly at startup.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::index::{EndReason, Location, Segment};

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    /// Name seconds.
    n: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<EndReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<Location>,
    /// Deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    x: bool,
}

impl Line {
    /// A line about `name_s` that says nothing yet.
    fn about(name_s: i64) -> Line {
        Line {
            n: name_s,
            s: None,
            d: None,
            b: None,
            e: None,
            l: None,
            x: false,
        }
    }

    fn closed(seg: &Segment) -> Line {
        Line {
            n: seg.name_s,
            s: Some(seg.start_ms),
            d: Some(seg.duration_ms),
            b: Some(seg.bytes),
            e: Some(seg.end),
            l: Some(seg.location),
            x: false,
        }
    }
}

/// What journal text says, by name seconds (torn or unknown lines are skipped).
pub fn replay(text: &str) -> HashMap<i64, Segment> {
    let mut out: HashMap<i64, Segment> = HashMap::new();
    for line in text.lines() {
        let Ok(l) = serde_json::from_str::<Line>(line) else {
            continue;
        };
        if l.x {
            out.remove(&l.n);
            continue;
        }
        if let (Some(s), Some(d), Some(b)) = (l.s, l.d, l.b) {
            out.insert(
                l.n,
                Segment {
                    name_s: l.n,
                    start_ms: s,
                    duration_ms: d,
                    bytes: b,
                    location: l.l.unwrap_or(Location::Local),
                    end: l.e.unwrap_or(EndReason::Unknown),
                },
            );
        } else if let (Some(loc), Some(seg)) = (l.l, out.get_mut(&l.n)) {
            seg.location = loc;
        }
    }
    out
}

/// Journal text that says exactly `segments`.
pub fn render(segments: &[Segment]) -> String {
    let mut text = String::with_capacity(segments.len() * 96);
    for seg in segments {
        if let Ok(line) = serde_json::to_string(&Line::closed(seg)) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// A stream's journal in one directory.
#[derive(Clone, Debug)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(dir: &Path, stream: &Uuid) -> Journal {
        Journal {
            path: dir.join(format!("{stream}.journal")),
        }
    }

    /// Everything the journal knows, by name seconds.
    pub fn load(&self) -> HashMap<i64, Segment> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => replay(&t),
            Err(_) => HashMap::new(),
        }
    }

    fn append(&self, line: &Line) -> io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
        text.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(text.as_bytes())
    }

    /// Records a closed file.
    pub fn closed(&self, seg: &Segment) -> io::Result<()> {
        self.append(&Line::closed(seg))
    }

    /// Records a new location (uploaded).
    pub fn moved(&self, name_s: i64, location: Location) -> io::Result<()> {
        self.append(&Line {
            l: Some(location),
            ..Line::about(name_s)
        })
    }

    /// Records a deletion.
    pub fn deleted(&self, name_s: i64) -> io::Result<()> {
        self.append(&Line {
            x: true,
            ..Line::about(name_s)
        })
    }

    /// Rewrites the journal with exactly `segments` (temp file, then rename).
    pub fn rewrite(&self, segments: &[Segment]) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("journal.tmp");
        std::fs::write(&tmp, render(segments))?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_replays_to_the_same_segments() {
        let segs = vec![
            Segment {
                name_s: 100,
                start_ms: 100_040,
                duration_ms: 1_960,
                bytes: 7,
                location: Location::Remote,
                end: EndReason::Handoff,
            },
            Segment {
                name_s: 102,
                start_ms: 102_000,
                duration_ms: 2_000,
                bytes: 9,
                location: Location::Remote,
                end: EndReason::NodeFailed,
            },
        ];
        let back = replay(&render(&segs));
        assert_eq!(back.len(), 2);
        for s in &segs {
            assert_eq!(back[&s.name_s], *s);
        }
        // Another tool's junk in the object is skipped, not fatal.
        assert_eq!(replay("not json\n{}\n").len(), 0);
    }

    #[test]
    fn replays_closes_moves_and_deletes_and_skips_torn_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Uuid::new_v4();
        let j = Journal::new(dir.path(), &id);
        let seg = |n: i64| Segment {
            name_s: n,
            start_ms: n * 1000 + 40,
            duration_ms: 30_000,
            bytes: 7,
            location: Location::Local,
            end: EndReason::Rotation,
        };
        j.closed(&seg(1)).expect("append");
        j.closed(&seg(2)).expect("append");
        j.moved(1, Location::Remote).expect("append");
        j.deleted(2).expect("append");
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(format!("{id}.journal")))
            .and_then(|mut f| f.write_all(b"{\"n\":3,\"s\":"))
            .expect("torn line");
        let all = j.load();
        assert_eq!(all.len(), 1);
        assert_eq!(all[&1].location, Location::Remote);
        assert_eq!(all[&1].start_ms, 1040);
        j.rewrite(&[seg(5)]).expect("rewrite");
        assert_eq!(j.load().keys().copied().collect::<Vec<_>>(), vec![5]);
    }
}

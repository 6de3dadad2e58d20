//! One archive file on the local disk, written while it records and repaired after a crash.
//!
//! Synchronous I/O (the recorder calls it from `spawn_blocking`). A file being written is named
//! `<final name>.<start-ms>.part`; it holds the init segment and then whole fragments, each
//! written with one vectored write, so a kill loses at most the fragment being built. Closing
//! appends an `mfra` (random access points), writes the real duration into `mvhd`/`mehd`,
//! syncs, and renames the file to its final name. [`recover`] does the same for a `.part`
//! file left by a crash: it cuts off the fragment that was being written and closes it.
//!
//! A closed file that stays on this disk also leaves the page cache once synced: recorded
//! video is written once and seldom read, and its pages would otherwise push out what is read
//! (and count against a container's memory). Pages freed at once are what the next writes
//! reuse; in a virtual machine that returns free memory to its host, writing into pages the
//! host took back costs several times the copy (docs/benchmarks.md, "page cache").

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::mp4::fmp4::{self, DurationFields};
use crate::mp4::movie::{top_level_boxes, whole_fragments_len, Movie};

/// The suffix of files being written.
pub const PART_SUFFIX: &str = ".part";

/// A file being recorded.
pub struct OpenFile {
    file: File,
    part: PathBuf,
    dest: PathBuf,
    len: u64,
    fields: DurationFields,
    /// Random access points: (decode time in the lead track's timescale, `moof` offset).
    points: Vec<(u64, u64)>,
    lead_track: u32,
}

/// A closed file.
#[derive(Debug)]
pub struct Closed {
    pub path: PathBuf,
    pub bytes: u64,
}

/// `<dir>/<name>.<start_ms>.part`.
pub fn part_path(dir: &Path, name: &str, start_ms: i64) -> PathBuf {
    dir.join(format!("{name}.{start_ms}{PART_SUFFIX}"))
}

/// Splits a `.part` file name into the final name and the start time.
pub fn parse_part_name(file_name: &str) -> Option<(&str, i64)> {
    let stem = file_name.strip_suffix(PART_SUFFIX)?;
    let (name, start) = stem.rsplit_once('.')?;
    Some((name, start.parse().ok()?))
}

/// Writes all of `chunks` with as few system calls as the OS allows.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl OpenFile {
    /// Creates `<dir>/<name>.<start_ms>.part` and writes the init segment (duration 0).
    pub fn create(
        dir: &Path,
        name: &str,
        start_ms: i64,
        init: &Bytes,
        fields: DurationFields,
        lead_track: u32,
    ) -> io::Result<OpenFile> {
        std::fs::create_dir_all(dir)?;
        let part = part_path(dir, name, start_ms);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&part)?;
        file.write_all(init)?;
        Ok(OpenFile {
            file,
            dest: dir.join(name),
            part,
            len: init.len() as u64,
            fields,
            points: Vec::new(),
            lead_track,
        })
    }

    /// Appends one fragment (its `moof`+`mdat` header and payloads). `key_time`: the lead
    /// track's decode time if the fragment starts with a random access point.
    pub fn append(&mut self, chunks: &[Bytes], key_time: Option<u64>) -> io::Result<()> {
        let offset = self.len;
        write_all_vectored(&mut self.file, chunks)?;
        self.len += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        if let Some(t) = key_time {
            self.points.push((t, offset));
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.len == 0
    }

    /// Closes the file: `mfra`, durations, sync, rename; with `uncache`, its pages then leave
    /// the page cache (a file to be uploaded is read again at once: it keeps them).
    pub fn finish(mut self, duration_ms: u64, uncache: bool) -> io::Result<Closed> {
        // After a failed append (disk full), drop its partial bytes: the file ends with the
        // last whole fragment, and the room freed takes the small `mfra`.
        self.file.set_len(self.len)?;
        self.file.seek(SeekFrom::Start(self.len))?;
        let mut tail = BytesMut::new();
        fmp4::write_mfra(&mut tail, self.lead_track, &self.points);
        self.file.write_all(&tail)?;
        for (at, bytes) in self.fields.patches(duration_ms) {
            self.file.seek(SeekFrom::Start(at as u64))?;
            self.file.write_all(&bytes)?;
        }
        self.file.sync_data()?;
        if uncache {
            // Advice only: a file system without it keeps the pages, nothing else changes.
            let _ = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed);
        }
        std::fs::rename(&self.part, &self.dest)?;
        Ok(Closed {
            path: self.dest,
            bytes: self.len + tail.len() as u64,
        })
    }

    /// Gives up on the file (nothing but the init was written): deletes it.
    pub fn discard(self) -> io::Result<()> {
        drop(self.file);
        std::fs::remove_file(&self.part)
    }
}

/// Finds the duration fields [`fmp4::file_init_segment`] writes (`mvhd` version 0, `mehd`
/// version 1) in a file's `moov`.
pub fn duration_fields(data: &[u8]) -> Option<DurationFields> {
    let (boxes, _) = top_level_boxes(data);
    let moov = boxes.into_iter().find(|(k, _)| k == b"moov")?.1;
    let children = |r: std::ops::Range<usize>| {
        let base = r.start + 8;
        top_level_boxes(&data[base..r.end])
            .0
            .into_iter()
            .map(move |(k, c)| (k, c.start + base..c.end + base))
    };
    let mvhd = children(moov.clone()).find(|(k, _)| k == b"mvhd")?.1;
    let mvex = children(moov).find(|(k, _)| k == b"mvex")?.1;
    let mehd = children(mvex).find(|(k, _)| k == b"mehd")?.1;
    // Version 0 mvhd: header 8, version+flags 4, creation 4, modification 4, timescale 4.
    // Version 1 mehd: header 8, version+flags 4.
    (data.get(mvhd.start + 8) == Some(&0) && data.get(mehd.start + 8) == Some(&1)).then_some(
        DurationFields {
            mvhd_at: mvhd.start + 24,
            mehd_at: mehd.start + 12,
        },
    )
}

/// What [`recover`] made of a `.part` file.
#[derive(Debug)]
pub struct Recovered {
    pub path: PathBuf,
    pub start_ms: i64,
    pub duration_ms: i64,
    pub bytes: u64,
}

/// Repairs a `.part` file left by a crash: keeps the whole fragments, closes the file like
/// [`OpenFile::finish`] and renames it. A file with no whole fragment is deleted (`Ok(None)`).
pub fn recover(part: &Path) -> Result<Option<Recovered>, String> {
    let err = |m: &dyn std::fmt::Display| format!("{}: {m}", part.display());
    let file_name = part
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(&"not a UTF-8 name"))?;
    let (name, start_ms) = parse_part_name(file_name).ok_or_else(|| err(&"not a .part name"))?;
    let dest = part.with_file_name(name);
    let data = std::fs::read(part).map_err(|e| err(&e))?;
    // Keep everything up to the last `mdat` that follows a `moof`.
    let Some(keep) = whole_fragments_len(&data) else {
        std::fs::remove_file(part).map_err(|e| err(&e))?;
        return Ok(None);
    };
    let data = Bytes::from(data).slice(..keep);
    let movie = Movie::parse(data.clone()).map_err(|e| err(&e))?;
    let lead_timescale = movie.params.timescale(movie.params.lead());
    let points: Vec<(u64, u64)> = movie
        .fragments
        .iter()
        .filter(|f| f.key)
        .map(|f| {
            (
                crate::media::rescale(f.start_90k, 90_000, lead_timescale).max(0) as u64,
                f.bytes.start as u64,
            )
        })
        .collect();
    let duration_ms = (movie.duration_90k / 90).max(0);
    let fields = duration_fields(&data).ok_or_else(|| err(&"no mvhd/mehd to patch"))?;
    let file = OpenOptions::new()
        .write(true)
        .open(part)
        .map_err(|e| err(&e))?;
    // Closed exactly as the recorder closes a file: cut to `keep`, `mfra`, durations, rename.
    let closed = OpenFile {
        file,
        part: part.to_owned(),
        dest,
        len: keep as u64,
        fields,
        points,
        lead_track: 1,
    }
    .finish(duration_ms as u64, false)
    .map_err(|e| err(&e))?;
    Ok(Some(Recovered {
        path: closed.path,
        start_ms,
        duration_ms,
        bytes: closed.bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_file_cut_mid_fragment_is_repaired_to_its_whole_fragments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let whole = crate::archive::playback::tests::file_bytes(6);
        let full = Movie::parse(whole.clone()).expect("parse");
        assert!(
            full.fragments.len() >= 4,
            "{} fragments",
            full.fragments.len()
        );
        // Killed while writing the fourth fragment.
        let cut = full.fragments[3].bytes.start + 100;
        let name = "0742091c-19cd-4658-9b4f-5320da160f45_1700000000.mp4";
        let part = part_path(dir.path(), name, 1_700_000_000_000);
        std::fs::write(&part, &whole[..cut]).expect("write");

        let r = recover(&part)
            .expect("repairs")
            .expect("has whole fragments");
        assert!(!part.exists(), "the .part file is renamed");
        assert_eq!(r.path, dir.path().join(name));
        assert_eq!(r.start_ms, 1_700_000_000_000);
        let data = std::fs::read(&r.path).expect("read");
        assert_eq!(r.bytes, data.len() as u64);
        let repaired = Movie::parse(Bytes::from(data.clone())).expect("the repaired file parses");
        assert_eq!(repaired.fragments.len(), 3);
        // Its samples are the first ones of the whole file, none lost before the cut.
        let times = |m: &Movie| -> Vec<(i64, bool)> {
            m.samples.iter().map(|s| (s.dts_90k, s.is_key)).collect()
        };
        let n = repaired.samples.len();
        assert!(n > 0 && n < full.samples.len());
        assert_eq!(times(&repaired), times(&full)[..n]);
        assert_eq!(r.duration_ms, repaired.duration_90k / 90);
        // Closed like any file: an `mfra` at the end, the durations patched in.
        let (boxes, _) = top_level_boxes(&data);
        assert_eq!(boxes.last().map(|b| &b.0), Some(b"mfra"));
        assert!(r.duration_ms >= 2_900, "{} ms", r.duration_ms);
    }

    /// Bytes of a file in the page cache (util-linux `fincore`).
    fn cached_bytes(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().expect("a byte count from fincore")
    }

    #[test]
    fn a_closed_file_leaves_the_page_cache_unless_it_is_to_be_uploaded() {
        // Under target/, on the disk the archive would be on (a tmpfs keeps its pages).
        let dir =
            tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).expect("tempdir");
        let whole = crate::archive::playback::tests::file_bytes(6);
        for uncache in [false, true] {
            let part = part_path(dir.path(), &format!("x{uncache}_1.mp4"), 1_000);
            std::fs::write(&part, &whole).expect("write");
            let file = OpenOptions::new().write(true).open(&part).expect("open");
            let closed = OpenFile {
                file,
                part: part.clone(),
                dest: dir.path().join(format!("x{uncache}_1.mp4")),
                len: whole.len() as u64,
                fields: duration_fields(&whole).expect("mvhd"),
                points: Vec::new(),
                lead_track: 1,
            }
            .finish(3_000, uncache)
            .expect("close");
            let cached = cached_bytes(&closed.path);
            if uncache {
                assert_eq!(cached, 0, "closed, synced and dropped from the cache");
            } else {
                assert!(cached >= whole.len() as u64 / 2, "{cached} bytes cached");
            }
            // Either way the file is whole.
            let data = std::fs::read(&closed.path).expect("read");
            assert!(Movie::parse(Bytes::from(data)).is_ok());
        }
    }

    #[test]
    fn a_part_file_without_a_whole_fragment_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let whole = crate::archive::playback::tests::file_bytes(2);
        let full = Movie::parse(whole.clone()).expect("parse");
        let part = part_path(dir.path(), "x_1.mp4", 1_000);
        std::fs::write(&part, &whole[..full.init_len + 10]).expect("write");
        assert!(recover(&part).expect("no error").is_none());
        assert!(!part.exists());
        // Not a `.part` name: refused with the name in the error.
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"x").expect("write");
        let e = recover(&other).expect_err("refused");
        assert!(e.contains("notes.txt"), "{e}");
    }
}

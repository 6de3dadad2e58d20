//! What a stream's archive holds at start-up, merged from three accounts of it: the bucket
//! listing (S3), the journal (the facts our recorder wrote: real start, duration, end reason)
//! and the files in the local directory. Pure: the caller lists, reads and deletes.
//!
//! Rules:
//! - a listed object is remote, with the journal's facts or else its name and the nominal
//!   `ms_per_file` (the original's assumption);
//! - a journal entry already uploaded stays known when the bucket cannot be listed now;
//! - a local file of the same size as its uploaded object is a copy a crash kept: it is
//!   deleted, not uploaded again;
//! - any other local file is local (its size from the directory), and is queued for upload
//!   when the stream stores to S3.

use std::collections::HashMap;

use uuid::Uuid;

use super::index::{self, EndReason, Location, Segment};

/// The merged account.
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    /// Every segment, in no particular order.
    pub segments: Vec<Segment>,
    /// Local files to upload, oldest first.
    pub pending: Vec<i64>,
    /// Local files that are already uploaded and can be deleted.
    pub uploaded_copies: Vec<i64>,
}

/// Merges the three accounts; `remote` is the listing as (object key, size), `None` when the
/// stream does not store to S3.
pub fn merge(
    id: &Uuid,
    ms_per_file: i64,
    remote: Option<&[(String, u64)]>,
    journaled: &HashMap<i64, Segment>,
    local: &[(i64, u64)],
) -> Merged {
    let mut segments: HashMap<i64, Segment> = HashMap::new();
    for (key, size) in remote.unwrap_or_default() {
        let Some(name) = key.rsplit('/').next() else {
            continue;
        };
        let Some(name_s) = index::parse_file_name(id, name) else {
            continue;
        };
        let mut seg = journaled
            .get(&name_s)
            .cloned()
            .unwrap_or_else(|| nominal(name_s, ms_per_file, *size));
        seg.location = Location::Remote;
        segments.insert(name_s, seg);
    }
    if remote.is_some() {
        for (name_s, seg) in journaled {
            if seg.location == Location::Remote {
                segments.entry(*name_s).or_insert_with(|| seg.clone());
            }
        }
    }
    let mut out = Merged::default();
    for &(name_s, bytes) in local {
        if let Some(r) = segments.get(&name_s) {
            if r.location == Location::Remote && r.bytes == bytes {
                out.uploaded_copies.push(name_s);
                continue;
            }
        }
        let mut seg = journaled
            .get(&name_s)
            .cloned()
            .unwrap_or_else(|| nominal(name_s, ms_per_file, bytes));
        seg.location = Location::Local;
        seg.bytes = bytes;
        if remote.is_some() {
            out.pending.push(name_s);
        }
        segments.insert(name_s, seg);
    }
    out.pending.sort_unstable();
    out.uploaded_copies.sort_unstable();
    out.segments = segments.into_values().collect();
    out
}

/// A segment known only by its name: the original's assumption of `ms_per_file`.
pub fn nominal(name_s: i64, ms_per_file: i64, bytes: u64) -> Segment {
    Segment {
        name_s,
        start_ms: name_s * 1000,
        duration_ms: ms_per_file,
        bytes,
        location: Location::Local,
        end: EndReason::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Uuid = Uuid::from_u128(0x0742091c_19cd_4658_9b4f_5320da160f45);

    fn key(name_s: i64) -> String {
        format!("prefix/{ID}/{}", index::file_name(&ID, name_s))
    }

    fn journaled(name_s: i64, location: Location, bytes: u64) -> (i64, Segment) {
        (
            name_s,
            Segment {
                name_s,
                start_ms: name_s * 1000 + 40,
                duration_ms: 29_960,
                bytes,
                location,
                end: EndReason::Rotation,
            },
        )
    }

    fn by_name(m: &Merged) -> HashMap<i64, Segment> {
        m.segments.iter().map(|s| (s.name_s, s.clone())).collect()
    }

    #[test]
    fn a_disk_archive_takes_local_files_with_the_journals_facts() {
        let j: HashMap<_, _> = [journaled(100, Location::Local, 5)].into();
        let m = merge(&ID, 30_000, None, &j, &[(100, 7), (130, 9)]);
        let s = by_name(&m);
        // The journal's real start and duration, the directory's size.
        assert_eq!(
            (s[&100].start_ms, s[&100].duration_ms, s[&100].bytes),
            (100_040, 29_960, 7)
        );
        // A file the journal never saw: its name and the nominal length.
        assert_eq!(
            (s[&130].start_ms, s[&130].duration_ms, s[&130].end),
            (130_000, 30_000, EndReason::Unknown)
        );
        assert!(m.pending.is_empty() && m.uploaded_copies.is_empty());
    }

    #[test]
    fn the_bucket_listing_the_journal_and_local_files_merge() {
        let listing = vec![
            (key(100), 10),
            (key(130), 11),
            ("prefix/not-ours.mp4".to_owned(), 3),
        ];
        let j: HashMap<_, _> = [
            journaled(100, Location::Remote, 10),
            journaled(160, Location::Remote, 12),
        ]
        .into();
        // 100: uploaded and its local copy kept by a crash; 190: not uploaded yet.
        let m = merge(&ID, 30_000, Some(&listing), &j, &[(190, 4), (100, 10)]);
        let s = by_name(&m);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[&100].location, Location::Remote);
        assert_eq!(s[&100].duration_ms, 29_960, "the journal's facts");
        assert_eq!(
            (s[&130].location, s[&130].duration_ms),
            (Location::Remote, 30_000)
        );
        // Not listed (the listing may be partial or late) but journaled as uploaded.
        assert_eq!(s[&160].location, Location::Remote);
        assert_eq!(s[&190].location, Location::Local);
        assert_eq!(m.pending, vec![190]);
        assert_eq!(m.uploaded_copies, vec![100]);
    }

    #[test]
    fn a_local_file_that_differs_from_its_object_is_uploaded_again() {
        let listing = vec![(key(100), 10)];
        let m = merge(&ID, 30_000, Some(&listing), &HashMap::new(), &[(100, 25)]);
        let s = by_name(&m);
        assert_eq!((s[&100].location, s[&100].bytes), (Location::Local, 25));
        assert_eq!(m.pending, vec![100]);
        assert!(m.uploaded_copies.is_empty());
    }

    #[test]
    fn without_s3_remote_journal_entries_are_forgotten() {
        let j: HashMap<_, _> = [journaled(100, Location::Remote, 10)].into();
        let m = merge(&ID, 30_000, None, &j, &[]);
        assert!(m.segments.is_empty());
    }
}

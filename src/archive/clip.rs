//! `clip.mp4` as a virtual file: planned once from the archive files, then served in pieces
//! that are read from those files only when the client's byte range reaches them.
//!
//! A clip of any length therefore costs memory for its plan (fragment headers and byte
//! ranges, about 10 bytes per frame) and for one archive file at a time while it is sent,
//! never for the whole clip. Planning reads each file once; sending reads the files the
//! requested range covers again (from the page cache or S3).
//!
//! What belongs here: the plan ([`ClipPlan`], pure once the files are parsed) and the reader
//! that walks it for a byte range, as a stream of bytes. The route, its checks, its headers
//! and the HTTP body made of the stream are the HTTP layer's (`api::archive`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::index::Segment;
use super::playback::{self, Planner};
use super::{ArchiveError, StreamArchive};
use crate::media::{rescale, StreamParams};
use crate::mp4::fmp4;
use crate::mp4::movie::Movie;

/// One piece of the clip, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Made here: the init segment, fragment headers, the `mfra`.
    Own(Bytes),
    /// `len` bytes at `offset` in the plan's file `file`.
    File {
        file: usize,
        offset: usize,
        len: usize,
    },
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Own(b) => b.len(),
            Piece::File { len, .. } => *len,
        }
    }
}

/// The whole clip, laid out.
#[derive(Debug)]
pub struct ClipPlan {
    /// The archive files the pieces read from.
    files: Vec<Segment>,
    pieces: Vec<Piece>,
    /// Byte offset of each piece in the clip.
    starts: Vec<u64>,
    len: u64,
}

/// Builds a plan file by file (pure: the caller parses the files).
struct Builder {
    planner: Planner,
    params: Option<Arc<StreamParams>>,
    sequence: u32,
    /// Fragments so far (the init segment is put first at the end).
    pieces: Vec<Piece>,
    /// Bytes of fragments so far.
    len: u64,
    /// (lead-track time, offset after the init) of each fragment that starts with a keyframe.
    points: Vec<(u64, u64)>,
    end_90k: i64,
    files: Vec<Segment>,
}

impl Builder {
    fn new(start_ms: i64, end_ms: i64) -> Builder {
        Builder {
            planner: Planner::new(start_ms, end_ms),
            params: None,
            sequence: 0,
            pieces: Vec::new(),
            len: 0,
            points: Vec::new(),
            end_90k: 0,
            files: Vec::new(),
        }
    }

    /// Adds what `movie` (the file `seg`) contributes. `false`: its codecs differ from the
    /// clip's, so the clip ends before it (one MP4 has one set of sample entries).
    fn file(&mut self, seg: &Segment, movie: &Movie, tolerance_ms: i64) -> bool {
        if self
            .params
            .as_ref()
            .is_some_and(|p| !p.same_codecs(&movie.params))
        {
            return false;
        }
        let plan = self.planner.file(movie, seg.start_ms, tolerance_ms);
        if plan.samples.is_empty() {
            return true;
        }
        let params = Arc::clone(self.params.get_or_insert_with(|| Arc::clone(&movie.params)));
        let file = self.files.len();
        self.files.push(seg.clone());
        let base = movie.bytes().as_ptr() as usize;
        let lead_ts = params.timescale(params.lead());
        let frags = playback::fragments(&plan.samples, &params, 90_000, &mut self.sequence);
        for f in frags {
            if f.key {
                self.points.push((
                    rescale(f.start_90k, 90_000, lead_ts).max(0) as u64,
                    self.len,
                ));
            }
            self.len += f.len as u64;
            self.end_90k = self.end_90k.max(f.start_90k + f.duration_90k);
            let mut chunks = f.chunks.into_iter();
            if let Some(header) = chunks.next() {
                self.pieces.push(Piece::Own(header));
            }
            for c in chunks {
                // Every payload is a slice of the file's buffer: keep where, not what.
                let offset = (c.as_ptr() as usize).wrapping_sub(base);
                match self.pieces.last_mut() {
                    Some(Piece::File {
                        file: f,
                        offset: o,
                        len,
                    }) if *f == file && *o + *len == offset => *len += c.len(),
                    _ => self.pieces.push(Piece::File {
                        file,
                        offset,
                        len: c.len(),
                    }),
                }
            }
        }
        true
    }

    fn finish(self) -> Option<ClipPlan> {
        let params = self.params?;
        if self.pieces.is_empty() {
            return None;
        }
        let duration_ms = (self.end_90k / 90).max(0) as u64;
        let (init, _) = fmp4::file_init_segment(&params, duration_ms);
        let init_len = init.len() as u64;
        let points: Vec<(u64, u64)> = self
            .points
            .iter()
            .map(|(t, o)| (*t, o + init_len))
            .collect();
        let mut mfra = BytesMut::new();
        fmp4::write_mfra(&mut mfra, 1, &points);
        let mut pieces = Vec::with_capacity(self.pieces.len() + 2);
        pieces.push(Piece::Own(init));
        pieces.extend(self.pieces);
        pieces.push(Piece::Own(mfra.freeze()));
        let mut starts = Vec::with_capacity(pieces.len());
        let mut len = 0u64;
        for p in &pieces {
            starts.push(len);
            len += p.len() as u64;
        }
        Some(ClipPlan {
            files: self.files,
            pieces,
            starts,
            len,
        })
    }
}

impl ClipPlan {
    /// Plans the clip of `start_ms..end_ms` over `segs` (in time order), reading each file
    /// once and keeping none. Unreadable files are skipped (and logged); the clip ends at a
    /// codec change.
    pub async fn build(
        sa: &StreamArchive,
        segs: &[Segment],
        start_ms: i64,
        end_ms: i64,
        tolerance_ms: i64,
    ) -> Result<ClipPlan, ArchiveError> {
        let mut b = Builder::new(start_ms, end_ms);
        for seg in segs {
            let movie = match sa.open(seg).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(stream = %sa.id, "skipping an unreadable archive file: {e}");
                    continue;
                }
            };
            if !b.file(seg, &movie, tolerance_ms) {
                tracing::info!(stream = %sa.id, "codec parameters change inside the window: the clip ends there");
                break;
            }
        }
        b.finish()
            .ok_or_else(|| ArchiveError::NotFound("no readable recording in this window".into()))
    }

    /// The clip's size in bytes (never 0: a plan has at least an init segment).
    pub fn size(&self) -> u64 {
        self.len
    }

    /// `len` bytes from `skip`, read from the files as they are reached (the HTTP layer makes
    /// the body of it).
    pub fn bytes(
        self: Arc<Self>,
        sa: Arc<StreamArchive>,
        skip: u64,
        len: u64,
    ) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
        let first = self
            .starts
            .partition_point(|s| *s <= skip)
            .saturating_sub(1);
        let state = Reader {
            plan: self,
            sa,
            next: first,
            skip,
            remaining: len,
            loaded: None,
        };
        futures::stream::unfold(state, Reader::step)
    }
}

/// Where a body is in its plan.
struct Reader {
    plan: Arc<ClipPlan>,
    sa: Arc<StreamArchive>,
    /// The next piece.
    next: usize,
    /// Clip offset the body starts at (cut from the first piece it reaches).
    skip: u64,
    remaining: u64,
    /// The file read last, kept while its pieces are sent.
    loaded: Option<(usize, Bytes)>,
}

impl Reader {
    async fn step(mut self) -> Option<(Result<Bytes, std::io::Error>, Reader)> {
        while self.remaining > 0 {
            let i = self.next;
            let piece = self.plan.pieces.get(i)?.clone();
            let start = self.plan.starts[i];
            self.next += 1;
            let bytes = match piece {
                Piece::Own(b) => b,
                Piece::File { file, offset, len } => {
                    if self.loaded.as_ref().map(|l| l.0) != Some(file) {
                        self.loaded = None; // one file at a time
                        let seg = &self.plan.files[file];
                        match self.sa.read(seg).await {
                            Ok(b) => self.loaded = Some((file, b)),
                            Err(e) => {
                                tracing::warn!(stream = %self.sa.id, "clip cut short: {e}");
                                let err = std::io::Error::other(e);
                                self.remaining = 0;
                                return Some((Err(err), self));
                            }
                        }
                    }
                    let data = self.loaded.as_ref().map(|l| &l.1)?;
                    match data.get(offset..offset + len) {
                        Some(_) => data.slice(offset..offset + len),
                        None => {
                            let err = std::io::Error::other(format!(
                                "{} is shorter than when the clip was planned",
                                self.plan.files[file].file_name(&self.sa.id)
                            ));
                            self.remaining = 0;
                            return Some((Err(err), self));
                        }
                    }
                }
            };
            let from = self.skip.saturating_sub(start).min(bytes.len() as u64) as usize;
            let to = (from as u64 + self.remaining).min(bytes.len() as u64) as usize;
            if from >= to {
                continue;
            }
            self.remaining -= (to - from) as u64;
            return Some((Ok(bytes.slice(from..to)), self));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::index::{EndReason, Location};

    fn seg(start_ms: i64) -> Segment {
        Segment {
            name_s: start_ms / 1000,
            start_ms,
            duration_ms: 4000,
            bytes: 0,
            location: Location::Local,
            end: EndReason::Rotation,
        }
    }

    /// Lays the plan out in memory, as the body would send it.
    fn materialize(plan: &ClipPlan, files: &[&Movie], from: usize, to: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &plan.pieces {
            match p {
                Piece::Own(b) => out.extend_from_slice(b),
                Piece::File { file, offset, len } => {
                    out.extend_from_slice(&files[*file].bytes()[*offset..*offset + *len])
                }
            }
        }
        out[from..to].to_vec()
    }

    #[test]
    fn a_plan_over_two_files_is_a_valid_mp4_with_every_frame_from_start() {
        let a = playback::tests::file(4);
        let b = playback::tests::file(4);
        let mut builder = Builder::new(1_000, 100_000);
        assert!(builder.file(&seg(0), &a, 500));
        assert!(builder.file(&seg(4_000), &b, 500));
        let plan = builder.finish().expect("plan");
        let bytes = materialize(&plan, &[&a, &b], 0, plan.size() as usize);
        assert_eq!(bytes.len() as u64, plan.size());
        let clip = Movie::parse(Bytes::from(bytes)).expect("the clip parses");
        // From the keyframe at 0 s (squeezed to 1 s), then 7 s more: 25 lead-in + 175 frames.
        let video: Vec<_> = clip
            .samples
            .iter()
            .filter(|s| s.track == crate::media::TrackKind::Video)
            .collect();
        assert_eq!(video.len(), 200);
        assert!(video[0].is_key);
        // Payloads came through from the right places: the test file's frame n is n bytes
        // of value n (mod 256), 20 long.
        let payload = clip.payload(video[30]);
        assert_eq!(payload.len(), 20);
        assert_eq!(payload[0], 30);
        // Merged ranges: far fewer pieces than samples.
        assert!(
            plan.pieces.len() < clip.samples.len() / 2,
            "{}",
            plan.pieces.len()
        );
    }

    #[test]
    fn a_codec_change_ends_the_plan() {
        let a = playback::tests::file(2);
        let mut other = playback::tests::file(2);
        let mut p = (*other.params).clone();
        if let Some(v) = p.video.as_mut() {
            v.rfc6381 = "avc1.640028".into();
            v.sample_entry = Bytes::from_static(b"\0\0\0\x09avc1x");
        }
        other.params = Arc::new(p);
        let mut builder = Builder::new(0, 100_000);
        assert!(builder.file(&seg(0), &a, 500));
        assert!(!builder.file(&seg(2_000), &other, 500));
        assert!(builder.finish().is_some());
        assert!(Builder::new(0, 1).finish().is_none());
    }
}

//! MP4 files held in memory and demuxed into one list of samples: progressive files (sample
//! tables in `moov`, as the original's archive and most tools write them) and fragmented files
//! (`moof`+`mdat` pairs, as our archive writes them), H.264, H.265 and AAC.
//!
//! Belongs here: the mp4-atom boundary for *reading* files, top-level box walking (also for
//! repairing a file cut short by a crash). Does not belong here: playing a file as a source
//! (`source::file`), writing MP4 (`mp4::fmp4`), archive policy (`archive`).
//!
//! Every sample is a zero-copy slice of the file's bytes.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mp4_atom::{Codec, Decode, Encode};

use crate::media::{self, AudioParams, StreamParams, TrackKind, VideoCodec, VideoParams};

/// Files are read into memory; larger ones are refused with a clear error.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// `sample_is_non_sync_sample` in ISO/IEC 14496-12 sample flags.
const NON_SYNC_FLAG: u32 = 0x0001_0000;

/// One sample (access unit) of the file.
#[derive(Clone, Debug)]
pub struct Sample {
    pub track: TrackKind,
    pub dts_90k: i64,
    pub cto_90k: i32,
    pub dur_90k: u32,
    pub is_key: bool,
    pub offset: usize,
    pub size: usize,
}

/// One `moof`+`mdat` pair of a fragmented file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Where the `moof` starts and the `mdat` ends.
    pub bytes: Range<usize>,
    /// Decode time of its first sample on the lead track (video, else audio), 90 kHz.
    pub start_90k: i64,
    /// Its first lead sample is a random access point.
    pub key: bool,
}

/// A demuxed file: parameters, samples in decode order, and the bytes.
#[derive(Debug)]
pub struct Movie {
    pub params: Arc<StreamParams>,
    pub samples: Vec<Sample>,
    /// Length of the longest track, 90 kHz.
    pub duration_90k: i64,
    /// End of the `moov` box: `data[..init_len]` is an init segment for fragmented files.
    pub init_len: usize,
    /// The fragments of a fragmented file, in file order (empty for progressive files).
    pub fragments: Vec<Fragment>,
    pub audio_frame_90k: u32,
    data: Bytes,
}

/// A box's type and where it is.
pub type BoxAt = ([u8; 4], Range<usize>);

/// The top-level boxes of `data` as (type, byte range), up to the first one that is cut
/// short or malformed; the second value is the length of that whole-box prefix.
pub fn top_level_boxes(data: &[u8]) -> (Vec<BoxAt>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size32 = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let size = match size32 {
            0 => data.len() - pos,
            1 => match data.get(pos + 8..pos + 16) {
                Some(b) => u64::from_be_bytes(b.try_into().unwrap_or([0; 8])) as usize,
                None => break,
            },
            n => n as usize,
        };
        let header = if size32 == 1 { 16 } else { 8 };
        if size < header || pos.checked_add(size).is_none_or(|end| end > data.len()) {
            break;
        }
        let kind = [data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]];
        out.push((kind, pos..pos + size));
        pos += size;
    }
    (out, pos)
}

/// Length of the longest prefix of a fragmented file that ends with a whole fragment (a `moof`
/// and its `mdat`), or `None` if there is none: what can be kept of a file cut short.
pub fn whole_fragments_len(data: &[u8]) -> Option<usize> {
    let (boxes, _) = top_level_boxes(data);
    boxes
        .windows(2)
        .rev()
        .find(|w| &w[0].0 == b"moof" && &w[1].0 == b"mdat")
        .map(|w| w[1].1.end)
}

/// Byte range of the first top-level box of `kind`.
fn find_box(data: &[u8], kind: &[u8; 4]) -> Option<Range<usize>> {
    top_level_boxes(data)
        .0
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, r)| r)
}

/// The children each container keeps when a `moov` or `moof` is decoded; every other child is
/// renamed `free` (same size) first, so that mp4-atom never parses a box this reader does not
/// use. Some of its decoders trust counts inside such boxes (found by `cargo fuzz run movie`: an
/// `sgpd` claiming billions of entries ran out of memory).
const KEEP: &[(&[u8; 4], &[&[u8; 4]])] = &[
    (b"moov", &[b"mvhd", b"trak", b"mvex"]),
    (b"trak", &[b"tkhd", b"mdia", b"edts"]),
    (b"edts", &[b"elst"]),
    (b"mdia", &[b"mdhd", b"hdlr", b"minf"]),
    (b"minf", &[b"vmhd", b"smhd", b"dinf", b"stbl"]),
    (b"dinf", &[b"dref"]),
    (
        b"stbl",
        &[
            b"stsd", b"stts", b"ctts", b"stss", b"stsc", b"stsz", b"stco", b"co64",
        ],
    ),
    (b"mvex", &[b"mehd", b"trex"]),
    (b"moof", &[b"mfhd", b"traf"]),
    (b"traf", &[b"tfhd", b"tfdt", b"trun"]),
    // Sample entries (children after their fixed fields: see `children_at`).
    (
        b"stsd",
        &[b"avc1", b"avc3", b"hvc1", b"hev1", b"mp4a", b"fLaC"],
    ),
    (b"avc1", &[b"avcC", b"pasp", b"btrt", b"colr"]),
    (b"avc3", &[b"avcC", b"pasp", b"btrt", b"colr"]),
    (b"hvc1", &[b"hvcC", b"pasp", b"btrt", b"colr"]),
    (b"hev1", &[b"hvcC", b"pasp", b"btrt", b"colr"]),
    (b"mp4a", &[b"esds", b"btrt"]),
    (b"fLaC", &[b"dfLa", b"btrt"]),
];

/// Where the children of a box start, counted from its content (after the box header): after
/// a full box's version and flags and an entry count (`stsd`), after a sample entry's fixed
/// fields, or at once. `None`: do not look inside (a QuickTime sound entry of another version).
fn children_at(kind: &[u8; 4], content: &[u8]) -> Option<usize> {
    match kind {
        b"stsd" => Some(8),
        b"avc1" | b"avc3" | b"hvc1" | b"hev1" => Some(78),
        // SoundSampleEntry version 0 only (its first field after the 8 reserved/index bytes).
        b"mp4a" | b"fLaC" => (content.get(8..10)? == [0, 0]).then_some(28),
        _ => Some(0),
    }
}

/// A copy of one top-level box with the children [`KEEP`] does not list renamed `free`.
fn pruned(top: &[u8]) -> Vec<u8> {
    let mut out = top.to_vec();
    if out.len() >= 8 {
        let kind: [u8; 4] = [out[4], out[5], out[6], out[7]];
        let len = out.len();
        prune_children(&mut out, &kind, 8, len);
    }
    out
}

fn prune_children(buf: &mut [u8], container: &[u8; 4], mut at: usize, end: usize) {
    let Some((_, keep)) = KEEP.iter().find(|(c, _)| *c == container) else {
        return;
    };
    while at + 8 <= end {
        let size32 = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let (size, header) = match size32 {
            0 => (end - at, 8),
            1 if at + 16 <= end => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[at + 8..at + 16]);
                (
                    usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX),
                    16,
                )
            }
            n => (n as usize, 8),
        };
        if size < header || size > end - at {
            return; // malformed: mp4-atom will say so
        }
        let kind: [u8; 4] = [buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]];
        if keep.contains(&&kind) {
            let content = at + header;
            if let Some(skip) = children_at(&kind, &buf[content..at + size]) {
                prune_children(buf, &kind, content + skip, at + size);
            }
        } else {
            buf[at + 4..at + 8].copy_from_slice(b"free");
        }
        at += size;
    }
}

/// A track as the `moov` describes it.
struct Track {
    id: u32,
    kind: TrackKind,
    timescale: u32,
    /// `trex` defaults: duration, size, flags.
    defaults: (u32, u32, u32),
}

impl Movie {
    /// Demuxes an MP4 held in memory.
    pub fn parse(data: Bytes) -> Result<Movie, Mp4Error> {
        let range = find_box(&data, b"moov").ok_or(Mp4Error::NoMoov)?;
        let init_len = range.end;
        let moov_bytes = pruned(&data[range]);
        let mut cur = std::io::Cursor::new(&moov_bytes[..]);
        let moov = mp4_atom::Moov::decode(&mut cur).map_err(|e| Mp4Error::Decode("moov", e))?;
        let mut params = StreamParams::default();
        let mut samples = Vec::new();
        let mut tracks = Vec::new();
        for trak in &moov.trak {
            let timescale = trak.mdia.mdhd.timescale.max(1);
            let stbl = &trak.mdia.minf.stbl;
            let Some(codec) = stbl.stsd.codecs.first() else {
                continue;
            };
            let Some(kind) = adopt_codec(codec, timescale, &mut params)? else {
                continue;
            };
            let id = trak.tkhd.track_id;
            let defaults = moov
                .mvex
                .as_ref()
                .and_then(|m| m.trex.iter().find(|t| t.track_id == id))
                .map_or((0, 0, 0), |t| {
                    (
                        t.default_sample_duration,
                        t.default_sample_size,
                        t.default_sample_flags,
                    )
                });
            tracks.push(Track {
                id,
                kind,
                timescale,
                defaults,
            });
            samples.extend(flatten(stbl, timescale, kind, data.len())?);
        }
        if params.video.is_none() && params.audio.is_none() {
            return Err(Mp4Error::NoTrack);
        }
        let lead = if params.video.is_some() {
            TrackKind::Video
        } else {
            TrackKind::Audio
        };
        // Every sample was checked to lie inside the file as it was listed (`inside`).
        let fragments = read_fragments(&data, &tracks, lead, &mut samples)?;
        // Decode order across tracks; video first on ties so a pass starts on its keyframe.
        samples.sort_by_key(|s| (s.dts_90k, s.track == TrackKind::Audio));
        let duration_90k = samples
            .iter()
            .map(|s| s.dts_90k + i64::from(s.dur_90k))
            .max()
            .unwrap_or(0);
        let audio_frame_90k = samples
            .iter()
            .find(|s| s.track == TrackKind::Audio && s.dur_90k > 0)
            .map_or(1920, |s| s.dur_90k.min(90_000));
        if let (Some(v), Some(s)) = (
            params.video.as_mut(),
            samples
                .iter()
                .find(|s| s.track == TrackKind::Video && s.dur_90k > 0),
        ) {
            v.frame_rate = Some((90_000, s.dur_90k));
        }
        Ok(Movie {
            params: Arc::new(params),
            samples,
            duration_90k,
            init_len,
            fragments,
            audio_frame_90k,
            data,
        })
    }

    /// The payload of a sample.
    pub fn payload(&self, s: &Sample) -> Bytes {
        self.data.slice(s.offset..s.offset + s.size)
    }

    /// The whole file.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }
}

/// Takes the first video and the first audio codec into `params`; returns the track's kind, or
/// `None` for a track we do not carry.
fn adopt_codec(
    codec: &Codec,
    timescale: u32,
    params: &mut StreamParams,
) -> Result<Option<TrackKind>, Mp4Error> {
    let mut entry = BytesMut::new();
    let video =
        |codec: VideoCodec, rfc6381: String, visual: &mp4_atom::Visual, entry: Bytes| VideoParams {
            codec,
            rfc6381,
            width: u32::from(visual.width),
            height: u32::from(visual.height),
            frame_rate: None,
            sample_entry: entry,
        };
    let kind = match codec {
        Codec::Avc1(avc) if params.video.is_none() => {
            codec.encode(&mut entry).map_err(Mp4Error::Entry)?;
            let c = &avc.avcc;
            let s = format!(
                "avc1.{:02X}{:02X}{:02X}",
                c.avc_profile_indication, c.profile_compatibility, c.avc_level_indication
            );
            params.video = Some(video(VideoCodec::H264, s, &avc.visual, entry.freeze()));
            TrackKind::Video
        }
        Codec::Hvc1(h) if params.video.is_none() => {
            codec.encode(&mut entry).map_err(Mp4Error::Entry)?;
            let s = hevc_codec_string("hvc1", &h.hvcc);
            params.video = Some(video(VideoCodec::H265, s, &h.visual, entry.freeze()));
            TrackKind::Video
        }
        Codec::Hev1(h) if params.video.is_none() => {
            codec.encode(&mut entry).map_err(Mp4Error::Entry)?;
            let s = hevc_codec_string("hev1", &h.hvcc);
            params.video = Some(video(VideoCodec::H265, s, &h.visual, entry.freeze()));
            TrackKind::Video
        }
        Codec::Mp4a(mp4a) if params.audio.is_none() => {
            codec.encode(&mut entry).map_err(Mp4Error::Entry)?;
            let profile = mp4a
                .esds
                .es_desc
                .dec_config
                .dec_specific
                .as_ref()
                .map(|d| d.profile)
                .filter(|&p| p != 0)
                .unwrap_or(2);
            params.audio = Some(AudioParams {
                rfc6381: format!("mp4a.40.{profile}"),
                sample_rate: timescale,
                channels: mp4a.audio.channel_count,
                sample_entry: entry.freeze(),
                g711: None,
            });
            TrackKind::Audio
        }
        // What we make of G.711 cameras (see `source::g711`).
        Codec::Flac(flac) if params.audio.is_none() => {
            codec.encode(&mut entry).map_err(Mp4Error::Entry)?;
            params.audio = Some(AudioParams {
                rfc6381: "flac".into(),
                sample_rate: timescale,
                channels: flac.audio.channel_count,
                sample_entry: entry.freeze(),
                g711: None,
            });
            TrackKind::Audio
        }
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

/// The RFC 6381 string of an HEVC track (ISO/IEC 14496-15 annex E), e.g. `hvc1.1.6.L93.B0`.
fn hevc_codec_string(fourcc: &str, c: &mp4_atom::Hvcc) -> String {
    let space = match c.general_profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    // The 32 compatibility flags in reverse bit order, as hex without leading zeros.
    let compat = u32::from_be_bytes(c.general_profile_compatibility_flags).reverse_bits();
    let tier = if c.general_tier_flag { 'H' } else { 'L' };
    let mut s = format!(
        "{fourcc}.{space}{}.{compat:X}.{tier}{}",
        c.general_profile_idc, c.general_level_idc
    );
    let flags = &c.general_constraint_indicator_flags;
    let used = flags.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    for b in &flags[..used] {
        s.push_str(&format!(".{b:X}"));
    }
    s
}

/// Reads every `moof`+`mdat` pair after the `moov`, appending their samples; returns the
/// fragments. Stops at the first box that is cut short.
fn read_fragments(
    data: &Bytes,
    tracks: &[Track],
    lead: TrackKind,
    samples: &mut Vec<Sample>,
) -> Result<Vec<Fragment>, Mp4Error> {
    let (boxes, _) = top_level_boxes(data);
    let mut fragments = Vec::new();
    let mut next_dts: Vec<i64> = vec![0; tracks.len()];
    for (i, (kind, range)) in boxes.iter().enumerate() {
        if kind != b"moof" {
            continue;
        }
        let mdat_end = match boxes.get(i + 1) {
            Some(([b'm', b'd', b'a', b't'], r)) => r.end,
            Some(_) => range.end,
            // The last whole box: its `mdat` is cut short (a file still being written, or
            // one a crash cut), so the fragment ends the file.
            None => break,
        };
        let moof_bytes = pruned(&data[range.clone()]);
        let mut cur = std::io::Cursor::new(&moof_bytes[..]);
        let moof = mp4_atom::Moof::decode(&mut cur).map_err(|e| Mp4Error::Decode("moof", e))?;
        let mut frag_start = None;
        for traf in &moof.traf {
            let Some(ti) = tracks.iter().position(|t| t.id == traf.tfhd.track_id) else {
                continue;
            };
            let track = &tracks[ti];
            let base = traf.tfhd.base_data_offset.map_or(range.start as u64, |b| b);
            let mut t = traf
                .tfdt
                .as_ref()
                // Bounded so that sums and differences of times cannot overflow.
                .map_or(next_dts[ti], |d| {
                    d.base_media_decode_time.min(1 << 53) as i64
                });
            let mut offset = base as i64;
            for trun in &traf.trun {
                if let Some(o) = trun.data_offset {
                    offset = (base as i64).saturating_add(i64::from(o));
                }
                for (n, e) in trun.samples.iter().enumerate() {
                    let dur = e
                        .duration
                        .or(traf.tfhd.default_sample_duration)
                        .unwrap_or(track.defaults.0);
                    let size = e
                        .size
                        .or(traf.tfhd.default_sample_size)
                        .unwrap_or(track.defaults.1);
                    let flags = e
                        .flags
                        .or(traf.tfhd.default_sample_flags)
                        .unwrap_or(track.defaults.2);
                    // A run without per-sample fields is only a count: an empty sample would let
                    // it run on without ever leaving the file.
                    let at = u64::try_from(offset).map_err(|_| Mp4Error::Outside)?;
                    if size == 0 || !inside(at, size, data.len()) {
                        return Err(Mp4Error::Outside);
                    }
                    let is_key = track.kind == TrackKind::Audio || flags & NON_SYNC_FLAG == 0;
                    let dts_90k = media::to_90k(t, track.timescale);
                    if n == 0 && track.kind == lead && frag_start.is_none() {
                        frag_start = Some((dts_90k, is_key));
                    }
                    samples.push(Sample {
                        track: track.kind,
                        dts_90k,
                        cto_90k: media::to_90k(e.cts.unwrap_or(0), track.timescale) as i32,
                        dur_90k: media::to_90k(i64::from(dur), track.timescale) as u32,
                        is_key,
                        offset: at as usize,
                        size: size as usize,
                    });
                    offset = offset.saturating_add(i64::from(size));
                    t = t.saturating_add(i64::from(dur));
                }
            }
            next_dts[ti] = t;
        }
        let (start_90k, key) = frag_start.unwrap_or((0, false));
        fragments.push(Fragment {
            bytes: range.start..mdat_end,
            start_90k,
            key,
        });
    }
    Ok(fragments)
}

/// Why a file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    #[error("no moov box (not an MP4 file?)")]
    NoMoov,
    #[error("bad {0}: {1}")]
    Decode(&'static str, #[source] mp4_atom::Error),
    #[error("cannot re-encode a sample entry: {0}")]
    Entry(#[source] mp4_atom::Error),
    #[error("no H.264 (avc1), H.265 (hvc1/hev1), AAC (mp4a) or FLAC (fLaC) track")]
    NoTrack,
    #[error("track without chunk offsets")]
    NoChunkOffsets,
    /// Samples must all lie inside the file.
    #[error(
        "a sample lies outside the file (truncated, or its tables describe more than the file \
         holds)"
    )]
    Outside,
}

/// Whether `size` bytes at `offset` lie inside a file of `file_len` bytes. Sample tables and
/// runs are untrusted counts: each sample is checked as it is listed, so nothing is allocated
/// or looped over beyond what the file holds (a table claiming four billion samples is an
/// error, not four billion entries).
fn inside(offset: u64, size: u32, file_len: usize) -> bool {
    offset.saturating_add(u64::from(size)) <= file_len as u64
}

/// Expands a track's sample tables into samples with absolute offsets and 90 kHz times, each
/// inside the file ([`inside`]).
fn flatten(
    stbl: &mp4_atom::Stbl,
    timescale: u32,
    track: TrackKind,
    file_len: usize,
) -> Result<Vec<Sample>, Mp4Error> {
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        mp4_atom::StszSamples::Identical { count, size } => {
            // Refused before the table is expanded.
            let total = u64::from(*count).saturating_mul(u64::from((*size).max(1)));
            if total > file_len as u64 {
                return Err(Mp4Error::Outside);
            }
            vec![*size; *count as usize]
        }
        mp4_atom::StszSamples::Different { sizes } => sizes.clone(),
    };
    let chunks: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(s), _) => s.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(c)) => c.entries.clone(),
        (None, None) => return Err(Mp4Error::NoChunkOffsets),
    };
    let mut out = Vec::with_capacity(sizes.len());
    // stsc: runs of chunks with the same number of samples.
    let mut sample_i = 0usize;
    for (ci, &chunk_off) in chunks.iter().enumerate() {
        let chunk_no = ci as u32 + 1;
        let per_chunk = stbl
            .stsc
            .entries
            .iter()
            .rev()
            .find(|e| e.first_chunk <= chunk_no)
            .map(|e| e.samples_per_chunk)
            .unwrap_or(0);
        let mut off = chunk_off as usize;
        for _ in 0..per_chunk {
            let Some(&size) = sizes.get(sample_i) else {
                break;
            };
            if !inside(off as u64, size, file_len) {
                return Err(Mp4Error::Outside);
            }
            out.push(Sample {
                track,
                dts_90k: 0,
                cto_90k: 0,
                dur_90k: 0,
                is_key: track == TrackKind::Audio,
                offset: off,
                size: size as usize,
            });
            off += size as usize;
            sample_i += 1;
        }
    }
    let mut t = 0i64;
    let mut deltas = stbl
        .stts
        .entries
        .iter()
        .flat_map(|e| std::iter::repeat_n(e.sample_delta, e.sample_count as usize));
    for s in out.iter_mut() {
        s.dts_90k = media::to_90k(t, timescale);
        let delta = deltas.next().unwrap_or(0);
        s.dur_90k = media::to_90k(i64::from(delta), timescale) as u32;
        t += i64::from(delta);
    }
    if let Some(ctts) = &stbl.ctts {
        let mut offsets = ctts
            .entries
            .iter()
            .flat_map(|e| std::iter::repeat_n(e.sample_offset, e.sample_count as usize));
        for s in out.iter_mut() {
            s.cto_90k = media::to_90k(offsets.next().unwrap_or(0), timescale) as i32;
        }
    }
    if track == TrackKind::Video {
        match &stbl.stss {
            Some(stss) => {
                for &n in &stss.entries {
                    if let Some(s) = out.get_mut((n as usize).wrapping_sub(1)) {
                        s.is_key = true;
                    }
                }
            }
            None => out.iter_mut().for_each(|s| s.is_key = true),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fragmented file as the recorder writes it: `secs` seconds of 25 fps video with a
    /// keyframe every second, one fragment per second.
    fn recorded(secs: i64) -> Vec<u8> {
        use crate::mp4::fmp4::{file_init_segment, tests::real_params};
        use crate::mp4::segmenter::{Event, Segmenter, Targets};
        let p = real_params(false);
        let mut seg = Segmenter::new(Targets::files(3_600 * 90_000, 90_000));
        let mut events = Vec::new();
        for n in 0..secs * 25 {
            let mut f = crate::media::Frame::test_video(n, n % 25 == 0, Bytes::from(vec![7; 300]));
            f.params = Arc::clone(&p);
            seg.push(&f, false, &mut events);
        }
        seg.break_here(&mut events);
        let mut bytes = file_init_segment(&p, 0).0.to_vec();
        for e in events {
            if let Event::Part(part) = e {
                for c in part.chunks {
                    bytes.extend_from_slice(&c);
                }
            }
        }
        bytes
    }

    #[test]
    fn a_file_cut_anywhere_parses_to_its_whole_fragments_or_a_clear_error() {
        let whole = recorded(4);
        let full = Movie::parse(Bytes::from(whole.clone())).expect("the whole file parses");
        assert_eq!(full.samples.len(), 100);
        assert_eq!(full.fragments.len(), 4);
        let mut cut = 0;
        while cut < whole.len() {
            let data = Bytes::copy_from_slice(&whole[..cut]);
            match Movie::parse(data) {
                Ok(m) => {
                    assert!(cut >= full.init_len, "parsed without a whole moov at {cut}");
                    // A prefix of the samples, each inside what is there.
                    let n = m.samples.len();
                    assert!(n <= full.samples.len());
                    for (a, b) in m.samples.iter().zip(&full.samples) {
                        assert_eq!((a.dts_90k, a.is_key), (b.dts_90k, b.is_key));
                    }
                    let whole_fragments =
                        full.fragments.iter().filter(|f| f.bytes.end <= cut).count();
                    assert_eq!(m.fragments.len(), whole_fragments, "cut at {cut}");
                }
                Err(e) => {
                    assert!(
                        cut < full.init_len,
                        "cut at {cut} after the moov failed: {e}"
                    );
                    assert!(matches!(e, Mp4Error::NoMoov | Mp4Error::Decode(..)), "{e}");
                }
            }
            cut += 37;
        }
    }

    #[test]
    fn odd_files_get_named_errors() {
        let err = |b: &[u8]| Movie::parse(Bytes::copy_from_slice(b)).err();
        assert!(matches!(err(b""), Some(Mp4Error::NoMoov)));
        assert!(matches!(
            err(b"GIF89a not a movie at all"),
            Some(Mp4Error::NoMoov)
        ));
        // A box whose size runs past the end, and one of size 1 (64-bit size) cut short.
        assert!(matches!(
            err(&[0, 0, 0x10, 0, b'm', b'o', b'o', b'v', 1, 2]),
            Some(Mp4Error::NoMoov)
        ));
        assert!(matches!(
            err(&[0, 0, 0, 1, b'm', b'o', b'o', b'v', 0, 0]),
            Some(Mp4Error::NoMoov)
        ));
        // A moov of garbage.
        let mut bad = vec![0, 0, 0, 24];
        bad.extend_from_slice(b"moov");
        bad.extend_from_slice(&[0xff; 16]);
        assert!(matches!(err(&bad), Some(Mp4Error::Decode("moov", _))));
        // Trailing garbage after whole fragments is ignored.
        let mut tail = recorded(2);
        tail.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1]);
        let m = Movie::parse(Bytes::from(tail)).expect("parses");
        assert_eq!(m.samples.len(), 50);
    }

    #[test]
    fn fuzz_finds_stay_fixed() {
        // `cargo fuzz run movie`: an `stsz` of 4 294 967 286 samples of 4 GiB each in a 1 KiB
        // file was expanded into a vector of that many entries (out of memory).
        let oom = include_bytes!("../../tests/data/fuzz/movie-stsz-four-billion-samples.mp4");
        let Err(err) = Movie::parse(Bytes::from_static(oom)) else {
            panic!("parsed a file whose tables describe more than it holds");
        };
        assert!(matches!(err, Mp4Error::Outside), "{err}");
        // An `sgpd` (sample groups, unused here) claiming billions of entries made mp4-atom
        // push entries until memory ran out: such boxes are no longer given to it.
        let oom = include_bytes!("../../tests/data/fuzz/movie-sgpd-billions-of-entries.mp4");
        let _ = Movie::parse(Bytes::from_static(oom));
        // The same inside an `mp4a` sample entry.
        let oom = include_bytes!("../../tests/data/fuzz/movie-sgpd-in-mp4a.mp4");
        let _ = Movie::parse(Bytes::from_static(oom));
        // A `trun` of billions of default-sized samples was listed sample by sample.
        let oom = include_bytes!("../../tests/data/fuzz/movie-trun-billions-of-samples.mp4");
        let Err(err) = Movie::parse(Bytes::from_static(oom)) else {
            panic!("parsed a fragment that describes more than the file holds");
        };
        assert!(matches!(err, Mp4Error::Outside), "{err}");
    }

    #[test]
    fn find_box_walks_top_level_and_rejects_garbage() {
        let mut data = Vec::new();
        data.extend_from_slice(&[0, 0, 0, 8]);
        data.extend_from_slice(b"free");
        data.extend_from_slice(&[0, 0, 0, 12]);
        data.extend_from_slice(b"moov");
        data.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(find_box(&data, b"moov"), Some(8..20));
        assert_eq!(find_box(&data, b"mdat"), None);
        assert_eq!(
            find_box(&[0, 0, 0, 200, b'm', b'o', b'o', b'v'], b"moov"),
            None
        );
        assert!(Movie::parse(Bytes::from_static(b"not an mp4 at all")).is_err());
    }
}

//! Local-file sources: an MP4 file (H.264 and/or AAC, progressive or with `moov` first) played
//! in real time as if it were a camera, optionally looped with continuous timestamps.
//!
//! The file is read whole (capped at [`MAX_FILE_BYTES`]) and each frame is a zero-copy slice
//! of it. The `moov` is decoded with mp4-atom; the sample tables are flattened into one list of
//! frames in decode order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mp4_atom::{Codec, Decode, Encode};
use tokio::time::Instant;

use super::{Emitter, SourceError};
use crate::media::{self, AudioParams, StreamParams, TrackKind, VideoCodec, VideoParams};

/// Local files are read into memory; larger ones are refused with a clear error.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// One frame of the file.
#[derive(Clone, Debug)]
pub struct Sample {
    pub track: TrackKind,
    pub dts_90k: i64,
    pub cto_90k: i32,
    pub is_key: bool,
    pub offset: usize,
    pub size: usize,
}

/// A demuxed file: parameters, frames in decode order, and the bytes.
#[derive(Debug)]
pub struct Movie {
    pub params: Arc<StreamParams>,
    pub samples: Vec<Sample>,
    /// Length of one pass (the longest track), 90 kHz.
    pub duration_90k: i64,
    data: Bytes,
    audio_frame_90k: u32,
}

fn err(path: &Path, msg: impl std::fmt::Display) -> SourceError {
    SourceError::File(format!("{}: {msg}", path.display()))
}

/// Byte range of the first top-level box of `kind`.
fn find_box(data: &[u8], kind: &[u8; 4]) -> Option<std::ops::Range<usize>> {
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size32 = u32::from_be_bytes(data[pos..pos + 4].try_into().ok()?);
        let (size, header) = match size32 {
            0 => (data.len() - pos, 8),
            1 => {
                let big = data.get(pos + 8..pos + 16)?;
                (u64::from_be_bytes(big.try_into().ok()?) as usize, 16)
            }
            n => (n as usize, 8),
        };
        if size < header || pos.checked_add(size)? > data.len() {
            return None;
        }
        if &data[pos + 4..pos + 8] == kind {
            return Some(pos..pos + size);
        }
        pos += size;
    }
    None
}

impl Movie {
    /// Reads and demuxes a file.
    pub async fn open(path: &Path) -> Result<Movie, SourceError> {
        let meta = tokio::fs::metadata(path).await.map_err(|e| err(path, e))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(err(
                path,
                format!(
                    "{} bytes is more than the {MAX_FILE_BYTES} a local source may have",
                    meta.len()
                ),
            ));
        }
        let data = tokio::fs::read(path).await.map_err(|e| err(path, e))?;
        Self::parse(Bytes::from(data)).map_err(|m| err(path, m))
    }

    /// Demuxes an MP4 held in memory.
    pub fn parse(data: Bytes) -> Result<Movie, String> {
        let range = find_box(&data, b"moov").ok_or("no moov box (not an MP4 file?)")?;
        let mut cur = std::io::Cursor::new(&data[range]);
        let moov = mp4_atom::Moov::decode(&mut cur).map_err(|e| format!("bad moov: {e}"))?;
        let mut params = StreamParams::default();
        let mut samples = Vec::new();
        let mut duration_90k = 0i64;
        let mut audio_frame_90k = 1920;
        for trak in &moov.trak {
            let timescale = trak.mdia.mdhd.timescale.max(1);
            let stbl = &trak.mdia.minf.stbl;
            let Some(codec) = stbl.stsd.codecs.first() else {
                continue;
            };
            let mut entry = BytesMut::new();
            let kind = match codec {
                Codec::Avc1(avc) if params.video.is_none() => {
                    codec.encode(&mut entry).map_err(|e| e.to_string())?;
                    let c = &avc.avcc;
                    params.video = Some(VideoParams {
                        codec: VideoCodec::H264,
                        rfc6381: format!(
                            "avc1.{:02X}{:02X}{:02X}",
                            c.avc_profile_indication,
                            c.profile_compatibility,
                            c.avc_level_indication
                        ),
                        width: u32::from(avc.visual.width),
                        height: u32::from(avc.visual.height),
                        frame_rate: None,
                        sample_entry: entry.freeze(),
                    });
                    TrackKind::Video
                }
                Codec::Mp4a(mp4a) if params.audio.is_none() => {
                    codec.encode(&mut entry).map_err(|e| e.to_string())?;
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
                    });
                    TrackKind::Audio
                }
                _ => continue,
            };
            let track_samples = flatten(stbl, timescale, kind)?;
            if let Some(last) = track_samples.last() {
                let first = track_samples[0].dts_90k;
                let n = track_samples.len() as i64;
                let avg = if n > 1 {
                    (last.dts_90k - first) / (n - 1)
                } else {
                    3600
                };
                duration_90k = duration_90k.max(last.dts_90k + avg);
                if kind == TrackKind::Audio {
                    audio_frame_90k = avg.clamp(1, 90_000) as u32;
                }
                if kind == TrackKind::Video && avg > 0 {
                    if let Some(v) = params.video.as_mut() {
                        v.frame_rate = Some((90_000, avg as u32));
                    }
                }
            }
            samples.extend(track_samples);
        }
        if params.video.is_none() && params.audio.is_none() {
            return Err("no H.264 (avc1) or AAC (mp4a) track".into());
        }
        for s in &samples {
            if s.offset
                .checked_add(s.size)
                .is_none_or(|end| end > data.len())
            {
                return Err("a sample lies outside the file (truncated?)".into());
            }
        }
        // Decode order across tracks; video first on ties so a pass starts on its keyframe.
        samples.sort_by_key(|s| (s.dts_90k, s.track == TrackKind::Audio));
        Ok(Movie {
            params: Arc::new(params),
            samples,
            duration_90k,
            data,
            audio_frame_90k,
        })
    }

    /// The payload of a sample.
    pub fn payload(&self, s: &Sample) -> Bytes {
        self.data.slice(s.offset..s.offset + s.size)
    }
}

/// Expands a track's sample tables into samples with absolute offsets and 90 kHz times.
fn flatten(stbl: &mp4_atom::Stbl, timescale: u32, track: TrackKind) -> Result<Vec<Sample>, String> {
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        mp4_atom::StszSamples::Identical { count, size } => vec![*size; *count as usize],
        mp4_atom::StszSamples::Different { sizes } => sizes.clone(),
    };
    let chunks: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(s), _) => s.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(c)) => c.entries.clone(),
        (None, None) => return Err("track without chunk offsets".into()),
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
            out.push(Sample {
                track,
                dts_90k: 0,
                cto_90k: 0,
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
        t += i64::from(deltas.next().unwrap_or(0));
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

/// Plays a movie in real time through `emit`; loops forever when `looped`.
pub async fn play(movie: &Movie, looped: bool, emit: &mut Emitter<'_>) -> Result<(), SourceError> {
    if movie.samples.is_empty() {
        return Err(SourceError::File("the file has no samples".into()));
    }
    emit.set_params(Arc::clone(&movie.params));
    emit.audio_frame_len(movie.audio_frame_90k);
    let start = Instant::now();
    let mut pass_offset_90k = 0i64;
    loop {
        for s in &movie.samples {
            let t_90k = pass_offset_90k + s.dts_90k;
            let due = start + Duration::from_micros((t_90k.max(0) as u64) * 100 / 9);
            tokio::time::sleep_until(due).await;
            emit.frame(
                s.track,
                t_90k,
                s.cto_90k,
                s.is_key,
                movie.payload(s),
                std::time::Instant::now(),
            );
        }
        if !looped {
            return Ok(());
        }
        pass_offset_90k += movie.duration_90k.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! What a decoder is given for a snapshot: the newest cached keyframe as a tiny fragmented MP4
//! (a video-only init segment and one fragment holding the keyframe), so one decoder input
//! covers H.264 and H.265 alike, parameter sets included (they live in the sample entry).
//! Pure: no I/O, no clock.
//!
//! Belongs here: building the decoder's input and checking the requested size. Does not belong
//! here: running the decoder (`ffmpeg`), caching (`mod`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::media::{Frame, StreamParams};
use crate::mp4::entry::{self, child_box};
use crate::mp4::fmp4::{self, Sample, TrackRun};

/// The widest snapshot we make (a 4K frame).
pub const MAX_WIDTH: u32 = 3840;
/// The narrowest: a thumbnail still worth a decode.
pub const MIN_WIDTH: u32 = 16;

/// Why a width is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("width must be a whole number from {MIN_WIDTH} to {MAX_WIDTH}, not `{0}`")]
pub struct BadWidth(pub String);

/// `?width=`: `None` keeps the camera's size; an odd width is rounded down to even (what
/// 4:2:0 encoders need).
pub fn parse_width(raw: Option<&str>) -> Result<Option<u32>, BadWidth> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    match raw.trim().parse::<u32>() {
        Ok(w) if (MIN_WIDTH..=MAX_WIDTH).contains(&w) => Ok(Some(w & !1)),
        _ => Err(BadWidth(raw.chars().take(32).collect())),
    }
}

/// The keyframe as a fragmented MP4 with its video track only; `None` for a frame that is not
/// a video keyframe or carries no video parameters.
pub fn keyframe_mp4(frame: &Frame) -> Option<Bytes> {
    if !frame.is_video_key() {
        return None;
    }
    let video = frame.params.video.clone()?;
    let params = Arc::new(StreamParams {
        video: Some(video),
        audio: None,
    });
    let init = fmp4::init_segment(&params);
    let mut buf = BytesMut::with_capacity(init.len() + frame.data.len() + 256);
    buf.extend_from_slice(&init);
    let sample = [Sample {
        duration: frame.dur_90k.max(1),
        cto: 0,
        is_sync: true,
        data: &frame.data,
    }];
    fmp4::write_fragment(
        &mut buf,
        1,
        &[TrackRun {
            track_id: params.track_id(crate::media::TrackKind::Video)?,
            base_decode_time: 0,
            samples: &sample,
        }],
    );
    Some(buf.freeze())
}

/// An H.264 keyframe as an Annex B access unit with its parameter sets first (what a decoder
/// that starts cold needs): the SPS and PPS from the `avcC` inside the `avc1` sample entry, then
/// the frame's NAL units, each behind a start code. `None` if the entry or the frame does not
/// parse.
pub fn annexb_keyframe(sample_entry: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    // OpenH264 decodes H.264 only.
    child_box(sample_entry, b"avcC")?;
    entry::annexb(&entry::parameter_sets(sample_entry)?, data)
}

/// Scales an RGB picture to `new_w` wide, the height in proportion and even: each output
/// pixel averages the input pixels it covers (downscaling), or takes the nearest one.
pub fn scale_rgb(rgb: &[u8], w: usize, h: usize, new_w: usize) -> (Vec<u8>, usize, usize) {
    if w == 0 || h == 0 || new_w == 0 || rgb.len() < w * h * 3 {
        return (rgb.to_vec(), w, h);
    }
    let new_h = ((h * new_w + w / 2) / w).max(2) & !1;
    let mut out = vec![0u8; new_w * new_h * 3];
    for y in 0..new_h {
        let (y0, y1) = (
            y * h / new_h,
            ((y + 1) * h / new_h).max(y * h / new_h + 1).min(h),
        );
        for x in 0..new_w {
            let (x0, x1) = (
                x * w / new_w,
                ((x + 1) * w / new_w).max(x * w / new_w + 1).min(w),
            );
            let mut sum = [0u32; 3];
            for sy in y0..y1 {
                let row = &rgb[(sy * w + x0) * 3..(sy * w + x1) * 3];
                for px in row.chunks_exact(3) {
                    for c in 0..3 {
                        sum[c] += u32::from(px[c]);
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let o = (y * new_w + x) * 3;
            for c in 0..3 {
                out[o + c] = ((sum[c] + n / 2) / n) as u8;
            }
        }
    }
    (out, new_w, new_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_avcc_keyframe_becomes_annex_b_with_its_parameter_sets_first() {
        let entry = crate::mp4::fmp4::tests::avc1_entry();
        let frame = [0u8, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06];
        let au = annexb_keyframe(&entry, &frame).expect("parses");
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x01, 0x04, 0x6c, 0x04, 0x40];
        let pps = [0x68, 0xcb, 0x83, 0xcb, 0x20];
        let mut want = vec![0, 0, 0, 1];
        want.extend_from_slice(&sps);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&pps);
        want.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0, 0, 0, 1, 0x06]);
        assert_eq!(au, want);
        // Cut anywhere: no panic, no picture.
        for cut in 0..frame.len() - 1 {
            let _ = annexb_keyframe(&entry, &frame[..cut]);
        }
        for cut in 0..entry.len() {
            assert!(annexb_keyframe(&entry[..cut], &frame).is_none() || cut >= entry.len());
        }
        assert!(annexb_keyframe(b"not a box at all", &frame).is_none());
    }

    #[test]
    fn scaling_averages_and_keeps_the_aspect_ratio_even() {
        // 4×2: left half black, right half white.
        let mut rgb = Vec::new();
        for _ in 0..2 {
            for x in 0..4 {
                rgb.extend_from_slice(&[if x < 2 { 0 } else { 255 }; 3]);
            }
        }
        let (out, w, h) = scale_rgb(&rgb, 4, 2, 2);
        assert_eq!((w, h), (2, 2), "height stays even, at least 2");
        assert_eq!(out, vec![0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255]);
        let (_, w, h) = scale_rgb(&vec![0; 1280 * 720 * 3], 1280, 720, 320);
        assert_eq!((w, h), (320, 180));
        let (_, w, h) = scale_rgb(&vec![0; 16 * 9 * 3], 16, 9, 32);
        assert_eq!((w, h), (32, 18), "upscaling takes the nearest pixel");
    }

    #[test]
    fn widths_are_checked_and_made_even() {
        assert_eq!(parse_width(None), Ok(None));
        assert_eq!(parse_width(Some("")), Ok(None));
        assert_eq!(parse_width(Some("320")), Ok(Some(320)));
        assert_eq!(parse_width(Some("321")), Ok(Some(320)));
        for bad in ["0", "15", "3841", "-2", "wide", "1e3", "99999999999"] {
            assert!(parse_width(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_keyframe_becomes_an_init_segment_and_one_fragment_with_it() {
        use mp4_atom::{Decode, Moof, Moov};
        let mut key = Frame::test_video(7, true, Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]));
        let mut params = (*key.params).clone();
        if let Some(v) = params.video.as_mut() {
            v.sample_entry = crate::mp4::fmp4::tests::avc1_entry();
        }
        params.audio = None;
        key.params = Arc::new(params);
        let mp4 = keyframe_mp4(&key).expect("a keyframe");
        let mut r = std::io::Cursor::new(mp4.as_ref());
        let _ftyp = mp4_atom::Ftyp::decode(&mut r).expect("ftyp");
        let moov = Moov::decode(&mut r).expect("moov");
        assert_eq!(moov.trak.len(), 1, "video only");
        let moof = Moof::decode(&mut r).expect("moof");
        assert_eq!(moof.traf[0].trun[0].samples.len(), 1);
        // The mdat holds the frame's bytes, last.
        assert!(mp4.ends_with(&key.data));
        // Not a keyframe: nothing to decode alone.
        let delta = Frame::test_video(8, false, Bytes::from_static(&[0, 0, 0, 1, 0x41]));
        assert!(keyframe_mp4(&delta).is_none());
    }
}

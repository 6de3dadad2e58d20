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

/// A decoded 4:2:0 picture: its planes, their strides (bytes per row) and its size.
pub struct Yuv420<'a> {
    pub planes: (&'a [u8], &'a [u8], &'a [u8]),
    pub strides: (usize, usize, usize),
    pub width: usize,
    pub height: usize,
}

/// Limited-range BT.601 (what H.264 decoders give) to RGB, for one pixel's averaged samples.
fn bt601_rgb(y: f32, u: f32, v: f32) -> [u8; 3] {
    const Y_MUL: f32 = 255.0 / 219.0;
    const RV: f32 = 255.0 / 224.0 * 1.402;
    const GV: f32 = -255.0 / 224.0 * 1.402 * 0.299 / 0.587;
    const GU: f32 = -255.0 / 224.0 * 1.772 * 0.114 / 0.587;
    const BU: f32 = 255.0 / 224.0 * 1.772;
    let (y, u, v) = (Y_MUL * (y - 16.0), u - 128.0, v - 128.0);
    let px = |c: f32| c.clamp(0.0, 255.0) as u8;
    [px(y + RV * v), px(y + GV * v + GU * u), px(y + BU * u)]
}

/// Scales a 4:2:0 picture to `new_w` wide (the same size and boxes as [`scale_rgb`]) and
/// converts only the result to RGB: each output pixel averages the luma samples its box covers
/// and, weighted by how many of its pixels use each, the chroma samples. A 720p frame never
/// becomes a 2.7 MB RGB picture for a 320-wide thumbnail. `None` when the planes are shorter than the size and strides say.
pub fn scale_yuv420(p: &Yuv420<'_>, new_w: usize) -> Option<(Vec<u8>, usize, usize)> {
    let (w, h) = (p.width, p.height);
    let (ys, us, vs) = p.strides;
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let fits = |plane: &[u8], stride: usize, pw: usize, ph: usize| {
        stride >= pw && plane.len() >= (ph - 1) * stride + pw
    };
    if w == 0 || h == 0 || new_w == 0 {
        return None;
    }
    if !(fits(p.planes.0, ys, w, h) && fits(p.planes.1, us, cw, ch) && fits(p.planes.2, vs, cw, ch))
    {
        return None;
    }
    let new_h = ((h * new_w + w / 2) / w).max(2) & !1;
    let span = |i: usize, from: usize, to: usize| {
        let a = i * from / to;
        (a, ((i + 1) * from / to).max(a + 1).min(from))
    };
    // The mean of a box of luma samples.
    let luma = |(x0, x1): (usize, usize), (y0, y1): (usize, usize)| {
        let mut sum = 0u32;
        for row in y0..y1 {
            let at = row * ys;
            sum += p.planes.0[at + x0..at + x1]
                .iter()
                .map(|&b| u32::from(b))
                .sum::<u32>();
        }
        sum as f32 / ((x1 - x0) * (y1 - y0)) as f32
    };
    // The mean, over the same box of pixels, of the chroma sample each pixel uses: a chroma
    // sample weighs as many of the box's pixels as it covers (1 to 4).
    let chroma =
        |plane: &[u8], stride: usize, (x0, x1): (usize, usize), (y0, y1): (usize, usize)| {
            let cover = |c: usize, a: usize, b: usize| (b.min(2 * c + 2) - a.max(2 * c)) as u32;
            let mut sum = 0u32;
            for cy in y0 / 2..=(y1 - 1) / 2 {
                let wy = cover(cy, y0, y1);
                for cx in x0 / 2..=(x1 - 1) / 2 {
                    sum += u32::from(plane[cy * stride + cx]) * cover(cx, x0, x1) * wy;
                }
            }
            sum as f32 / ((x1 - x0) * (y1 - y0)) as f32
        };
    let mut out = Vec::with_capacity(new_w * new_h * 3);
    for y in 0..new_h {
        let ry = span(y, h, new_h);
        for x in 0..new_w {
            let rx = span(x, w, new_w);
            out.extend(bt601_rgb(
                luma(rx, ry),
                chroma(p.planes.1, us, rx, ry),
                chroma(p.planes.2, vs, rx, ry),
            ));
        }
    }
    Some((out, new_w, new_h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The picture a decoder's own conversion would give: every pixel converted with its
    /// chroma sample, full size.
    fn rgb_of(p: &Yuv420<'_>) -> Vec<u8> {
        let mut rgb = Vec::new();
        for y in 0..p.height {
            for x in 0..p.width {
                rgb.extend(bt601_rgb(
                    f32::from(p.planes.0[y * p.strides.0 + x]),
                    f32::from(p.planes.1[y / 2 * p.strides.1 + x / 2]),
                    f32::from(p.planes.2[y / 2 * p.strides.2 + x / 2]),
                ));
            }
        }
        rgb
    }

    /// A 4:2:0 test picture's planes and strides.
    struct Planes(Vec<u8>, Vec<u8>, Vec<u8>, (usize, usize, usize));

    /// A 4:2:0 test picture with padded rows: smooth gradients over the whole colour range and
    /// a hard luma edge.
    fn planes(w: usize, h: usize) -> Planes {
        let (ys, cs) = (w + 16, w.div_ceil(2) + 8);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut y = vec![0u8; ys * h];
        let (mut u, mut v) = (vec![0u8; cs * ch], vec![0u8; cs * ch]);
        for r in 0..h {
            for c in 0..w {
                y[r * ys + c] = if c > w / 2 {
                    200
                } else {
                    (16 + 219 * (r + c) / (w + h)) as u8
                };
            }
        }
        for r in 0..ch {
            for c in 0..cw {
                u[r * cs + c] = (16 + 224 * c / cw) as u8;
                v[r * cs + c] = (16 + 224 * r / ch) as u8;
            }
        }
        Planes(y, u, v, (ys, cs, cs))
    }

    #[test]
    fn scaling_a_yuv_picture_matches_converting_it_whole_then_scaling() {
        for (w, h, to) in [(64, 36, 16), (1280, 720, 320), (60, 34, 16), (17, 9, 32)] {
            let Planes(y, u, v, strides) = planes(w, h);
            let p = Yuv420 {
                planes: (&y, &u, &v),
                strides,
                width: w,
                height: h,
            };
            let (want, ww, wh) = scale_rgb(&rgb_of(&p), w, h, to);
            let (got, gw, gh) = scale_yuv420(&p, to).expect("planes fit");
            assert_eq!((gw, gh), (ww, wh), "{w}×{h} to {to}");
            let diffs: Vec<u32> = got
                .iter()
                .zip(&want)
                .map(|(a, b)| u32::from(a.abs_diff(*b)))
                .collect();
            let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
            let far = diffs.iter().filter(|&&d| d > 3).count() as f64 / diffs.len() as f64;
            // Averaging before or after the (affine) conversion differs only in rounding and
            // where some of a box's pixels clip (a saturated colour) and others do not.
            assert!(mean < 0.6, "{w}×{h} to {to}: mean difference {mean}");
            assert!(
                far < 0.1,
                "{w}×{h} to {to}: {far} of the values differ by more than 3"
            );
        }
    }

    #[test]
    fn planes_shorter_than_their_size_are_refused() {
        let Planes(y, u, v, strides) = planes(64, 36);
        let p = |height| Yuv420 {
            planes: (&y, &u, &v),
            strides,
            width: 64,
            height,
        };
        assert!(scale_yuv420(&p(36), 16).is_some());
        assert!(scale_yuv420(&p(40), 16).is_none());
        assert!(scale_yuv420(&p(0), 16).is_none());
        assert!(scale_yuv420(&p(36), 0).is_none());
    }

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

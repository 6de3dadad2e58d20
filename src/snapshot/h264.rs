//! The in-process decoder boundary for H.264 snapshots: OpenH264 (the `openh264` crate, built
//! from Cisco's bundled source) decodes the keyframe, `jpeg-encoder` writes the JPEG. About ten
//! times cheaper than starting an ffmpeg process per picture; a keyframe it cannot decode goes to
//! ffmpeg instead (`mod`). Synchronous and CPU-bound: run it on a blocking thread.
//!
//! Belongs here: the two libraries' calls. Does not belong here: building the Annex B access
//! unit and scaling (`picture`, pure), caching (`mod`).

use bytes::Bytes;

use super::ffmpeg::DecodeError;
use super::picture;

/// JPEG quality (1–100): small files, no visible blocking at grid sizes.
const QUALITY: u8 = 80;

/// Decodes an Annex B access unit (parameter sets and a keyframe) to a JPEG, scaled to `width`.
pub fn jpeg(annexb: &[u8], width: Option<u32>) -> Result<Bytes, DecodeError> {
    use openh264::formats::YUVSource;
    let failed =
        |what: &str, e: &dyn std::fmt::Display| DecodeError::Failed(format!("{what}: {e}"));
    let mut decoder = openh264::decoder::Decoder::new().map_err(|e| failed("OpenH264", &e))?;
    let (w, h, rgb) = {
        let picture = match decoder.decode(annexb).map_err(|e| failed("OpenH264", &e))? {
            Some(p) => p,
            None => return Err(DecodeError::Failed("OpenH264 gave no picture".into())),
        };
        let (w, h) = picture.dimensions();
        if w == 0 || h == 0 || w > 8192 || h > 8192 {
            return Err(DecodeError::Failed(format!(
                "OpenH264 gave a {w}×{h} picture"
            )));
        }
        let mut rgb = vec![0u8; w * h * 3];
        picture.write_rgb8(&mut rgb);
        (w, h, rgb)
    };
    let (rgb, w, h) = match width {
        Some(to) => picture::scale_rgb(&rgb, w, h, to as usize),
        None => (rgb, w, h),
    };
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(DecodeError::Failed(format!(
            "a {w}×{h} picture is too large for JPEG"
        )));
    };
    let mut out = Vec::with_capacity(w * h / 4);
    jpeg_encoder::Encoder::new(&mut out, QUALITY)
        .encode(&rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| failed("JPEG", &e))?;
    Ok(Bytes::from(out))
}

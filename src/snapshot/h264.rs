//! The in-process decoder boundary for H.264 snapshots: OpenH264 (the `openh264` crate, built
//! from Cisco's bundled source) decodes the keyframe, `jpeg-encoder` writes the JPEG. About ten
//! times cheaper than starting an ffmpeg process per picture; a keyframe it cannot decode goes to
//! ffmpeg instead (`mod`). Synchronous and CPU-bound: run it on a blocking thread.
//!
//! One decoder is kept warm between pictures, with its full-size RGB buffer. A new decoder
//! allocates and zeroes about 15 MB for a 720p picture and frees it again; on a virtual machine
//! whose host takes freed pages back, those page faults cost as much as the decode. The warm
//! decoder is only given an IDR picture, which empties the decoder's reference pictures: a
//! picture of one camera never uses what is left of another's. It is freed once unused for
//! [`KEEP_WARM`] (`mod` runs [`reap`]).
//!
//! Belongs here: the two libraries' calls and the warm decoder. Does not belong here: building
//! the Annex B access unit and scaling (`picture`, pure), caching (`mod`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ffmpeg::DecodeError;
use super::picture;

/// JPEG quality (1–100): small files, no visible blocking at grid sizes.
const QUALITY: u8 = 80;
/// A warm decoder unused this long is freed.
pub const KEEP_WARM: Duration = Duration::from_secs(10);
/// Larger pictures do not keep their decoder warm (a 4K decoder holds about 100 MB).
const WARM_MAX_PIXELS: usize = 1920 * 1088;

/// A decoder and the buffer its pictures are converted into.
struct Warm {
    decoder: openh264::decoder::Decoder,
    rgb: Vec<u8>,
}

/// The warm decoder, when it was last put back, and whether a [`reap`] is on its way.
struct Slot {
    warm: Option<Warm>,
    used: Option<Instant>,
    reaping: bool,
}

static SLOT: Mutex<Slot> = Mutex::new(Slot {
    warm: None,
    used: None,
    reaping: false,
});

fn slot() -> std::sync::MutexGuard<'static, Slot> {
    SLOT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decodes an Annex B access unit (parameter sets and a keyframe) to a JPEG, scaled to `width`.
/// `idr`: the access unit holds an IDR picture, so the warm decoder may take it.
pub fn jpeg(annexb: &[u8], idr: bool, width: Option<u32>) -> Result<Bytes, DecodeError> {
    let taken = if idr { slot().warm.take() } else { None };
    let mut warm = match taken {
        Some(w) => w,
        None => Warm {
            decoder: openh264::decoder::Decoder::new().map_err(|e| failed("OpenH264", &e))?,
            rgb: Vec::new(),
        },
    };
    let out = warm.picture(annexb, width)?;
    // Nothing of this picture stays queued for the next one, and a big picture's decoder goes.
    if warm.rgb.len() <= WARM_MAX_PIXELS * 3 && warm.decoder.flush_remaining().is_ok() {
        let mut s = slot();
        if s.warm.is_none() {
            s.warm = Some(warm);
            s.used = Some(Instant::now());
        }
    }
    Ok(out)
}

/// Whether a [`reap`] should be started now: a decoder is warm and no reap is on its way (the
/// caller that gets `true` must run one).
pub fn claim_reap() -> bool {
    let mut s = slot();
    let claim = s.warm.is_some() && !s.reaping;
    s.reaping |= claim;
    claim
}

/// Frees the warm decoder if it has been unused for `keep`; otherwise says how long to wait
/// before asking again. `None`: nothing is warm any more, the reap is over.
pub fn reap(keep: Duration) -> Option<Duration> {
    let freed = {
        let mut s = slot();
        let idle = s.used.map_or(keep, |u| u.elapsed());
        if s.warm.is_some() && idle < keep {
            return Some(keep - idle);
        }
        s.reaping = false;
        s.warm.take()
    };
    drop(freed);
    None
}

fn failed(what: &str, e: &dyn std::fmt::Display) -> DecodeError {
    DecodeError::Failed(format!("{what}: {e}"))
}

impl Warm {
    fn picture(&mut self, annexb: &[u8], width: Option<u32>) -> Result<Bytes, DecodeError> {
        use openh264::formats::YUVSource;
        let (w, h) = {
            let picture = match self
                .decoder
                .decode(annexb)
                .map_err(|e| failed("OpenH264", &e))?
            {
                Some(p) => p,
                None => return Err(DecodeError::Failed("OpenH264 gave no picture".into())),
            };
            let (w, h) = picture.dimensions();
            if w == 0 || h == 0 || w > 8192 || h > 8192 {
                return Err(DecodeError::Failed(format!(
                    "OpenH264 gave a {w}×{h} picture"
                )));
            }
            self.rgb.resize(w * h * 3, 0);
            picture.write_rgb8(&mut self.rgb);
            (w, h)
        };
        let scaled;
        let (rgb, w, h) = match width {
            Some(to) => {
                scaled = picture::scale_rgb(&self.rgb, w, h, to as usize);
                (&scaled.0[..], scaled.1, scaled.2)
            }
            None => (&self.rgb[..], w, h),
        };
        let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
            return Err(DecodeError::Failed(format!(
                "a {w}×{h} picture is too large for JPEG"
            )));
        };
        let mut out = Vec::with_capacity(w * h / 4);
        jpeg_encoder::Encoder::new(&mut out, QUALITY)
            .encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| failed("JPEG", &e))?;
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::encoder::{Encoder, FrameType};
    use openh264::formats::{RgbSliceU8, YUVBuffer};

    /// Two pictures of one camera, `w`×`h`: a flat colour, encoded by OpenH264 as an IDR picture
    /// (parameter sets in front), then a gradient over it, encoded as a P picture that refers to
    /// it. Each as a decoder that starts cold gets it: Annex B with the parameter sets first.
    fn camera(w: usize, h: usize, colour: [u8; 3]) -> (Vec<u8>, Vec<u8>) {
        let mut enc = Encoder::new().expect("encoder");
        let flat: Vec<u8> = (0..w * h).flat_map(|_| colour).collect();
        let ramp: Vec<u8> = (0..w * h)
            .flat_map(|i| [(i % w) as u8, colour[1], (i / w) as u8])
            .collect();
        let mut pictures = Vec::new();
        for (rgb, kind) in [(flat, FrameType::IDR), (ramp, FrameType::P)] {
            let yuv = YUVBuffer::from_rgb_source(RgbSliceU8::new(&rgb, (w, h)));
            let bits = enc.encode(&yuv).expect("encode");
            assert_eq!(bits.frame_type(), kind);
            pictures.push(bits.to_vec());
        }
        let p = pictures.pop().expect("P");
        let idr = pictures.pop().expect("IDR");
        let sets: Vec<u8> = nals(&idr)
            .into_iter()
            .filter(|n| matches!(n[0] & 0x1f, 7 | 8))
            .flat_map(|n| [&[0, 0, 0, 1], n].concat())
            .collect();
        (idr, [sets, p].concat())
    }

    /// The NAL units of an Annex B stream (4- or 3-byte start codes).
    fn nals(annexb: &[u8]) -> Vec<&[u8]> {
        let starts: Vec<usize> = (0..annexb.len().saturating_sub(2))
            .filter(|&i| annexb[i..i + 3] == [0, 0, 1])
            .map(|i| i + 3)
            .collect();
        let mut out = Vec::new();
        for (k, &s) in starts.iter().enumerate() {
            let end = starts.get(k + 1).map_or(annexb.len(), |&n| n - 3);
            let nal = &annexb[s..end];
            out.push(nal.strip_suffix(&[0]).unwrap_or(nal));
        }
        out
    }

    /// Width and height from a baseline JPEG's frame header (SOF0).
    fn jpeg_size(jpeg: &[u8]) -> (u16, u16) {
        let at = jpeg
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("SOF0");
        let h = u16::from_be_bytes([jpeg[at + 5], jpeg[at + 6]]);
        let w = u16::from_be_bytes([jpeg[at + 7], jpeg[at + 8]]);
        (w, h)
    }

    #[test]
    fn pictures_of_two_cameras_in_turn_each_come_out_at_their_own_size() {
        let (a, _) = camera(320, 240, [200, 30, 30]);
        let (b, _) = camera(256, 144, [30, 30, 200]);
        for _ in 0..3 {
            let ja = jpeg(&a, true, None).expect("camera A");
            assert_eq!(jpeg_size(&ja), (320, 240));
            let jb = jpeg(&b, true, None).expect("camera B");
            assert_eq!(jpeg_size(&jb), (256, 144));
            let small = jpeg(&a, true, Some(160)).expect("camera A, scaled");
            assert_eq!(jpeg_size(&small), (160, 120));
        }
    }

    #[test]
    fn a_picture_that_is_not_an_idr_never_meets_another_cameras_pictures() {
        let (a, _) = camera(320, 240, [200, 30, 30]);
        let (_, b_p) = camera(320, 240, [30, 30, 200]);
        // What the rule prevents: a decoder that still holds camera A's picture makes a
        // picture of camera B's P frame out of it.
        let mut used = openh264::decoder::Decoder::new().expect("decoder");
        assert!(used.decode(&a).expect("A").is_some());
        assert!(
            matches!(used.decode(&b_p), Ok(Some(_))),
            "OpenH264 no longer decodes a P picture over another stream's reference"
        );
        // The warm decoder has just decoded camera A; camera B's P frame gets a cold decoder,
        // which has nothing to refer to, so there is no picture (ffmpeg gets its turn).
        jpeg(&a, true, None).expect("camera A");
        assert!(jpeg(&b_p, false, None).is_err());
    }

    #[test]
    fn the_warm_decoder_is_freed_once_unused() {
        let (a, _) = camera(320, 240, [30, 200, 30]);
        jpeg(&a, true, None).expect("camera A");
        // One reap at a time.
        assert!(claim_reap());
        assert!(!claim_reap());
        // Used just now: wait, up to the time asked for.
        let wait = reap(Duration::from_secs(3600)).expect("still warm");
        assert!(wait <= Duration::from_secs(3600) && wait > Duration::from_secs(3500));
        assert!(slot().warm.is_some());
        // Unused for long enough: freed, and the reap is over.
        assert_eq!(reap(Duration::ZERO), None);
        assert!(slot().warm.is_none());
        assert!(!claim_reap());
        // A picture after that warms a decoder again.
        jpeg(&a, true, None).expect("camera A again");
        assert!(claim_reap());
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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

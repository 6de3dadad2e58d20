//! The parameter-set readers on arbitrary bytes: a camera's SDP and bitstream are untrusted.
//! The first byte picks the reader; a reorder depth, when read, is at most 16 frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_server::media::VideoCodec;
use video_server::source::sps::{self, ReorderDepth};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let depth = match pick % 4 {
        0 => sps::h264_reorder_depth(rest),
        1 => sps::h265_reorder_depth(rest),
        2 => sps::reorder_depth(VideoCodec::H264, rest),
        _ => sps::reorder_depth(VideoCodec::H265, rest),
    };
    if let Some(ReorderDepth::Frames(n)) = depth {
        assert!((1..=16).contains(&n), "{n}");
    }
});

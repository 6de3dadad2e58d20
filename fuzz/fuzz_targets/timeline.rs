//! The stream timeline (timestamp jumps, reordering, new sessions) on arbitrary camera
//! timestamps: decode times never go back or repeat per track, presentation never precedes
//! decoding, durations are positive, and nothing overflows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_server::media::TrackKind;
use video_server::source::sps::ReorderDepth;
use video_server::source::Timeline;

fuzz_target!(|data: &[u8]| {
    let mut tl = Timeline::default();
    tl.set_reorder_depth(ReorderDepth::Frames(u32::from(
        data.first().copied().unwrap_or(0) % 4,
    )));
    let mut last = [i64::MIN; 2];
    let mut arrival_ms = 0i64;
    for chunk in data.chunks_exact(6) {
        let op = chunk[0];
        let step = i32::from_le_bytes([chunk[1], chunk[2], chunk[3], chunk[4]]);
        arrival_ms += i64::from(chunk[5]);
        match op % 8 {
            0 => tl.new_session(),
            1 => tl.parameters_changed(),
            _ => {}
        }
        let kind = if op & 0x80 != 0 {
            TrackKind::Audio
        } else {
            TrackKind::Video
        };
        // Camera times: anything, as a wrapping RTP clock extended to 64 bits gives them.
        let pts = i64::from(step) * i64::from(chunk[5] as i8);
        let cto = (op & 0x40 != 0).then_some(i32::from(chunk[1]) * 100);
        let m = tl.map(kind, pts, cto, arrival_ms, 3600);
        let i = usize::from(kind == TrackKind::Audio);
        assert!(m.dts_90k > last[i], "{} after {}", m.dts_90k, last[i]);
        assert!(m.cto_90k >= 0, "cto {}", m.cto_90k);
        assert!(m.dur_90k > 0);
        last[i] = m.dts_90k;
    }
});

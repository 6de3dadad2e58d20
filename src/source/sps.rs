//! What a camera's sequence parameter set says about frame reordering: the number of frames
//! that may come before a picture in decode order and after it in output order (B-frames).
//!
//! Belongs here: a bit reader for NAL unit payloads (emulation prevention removed, Exp-Golomb
//! codes), the H.264 SPS (ITU-T H.264 7.3.2.1.1 and VUI E.1.1) and H.265 SPS (ITU-T H.265
//! 7.3.2.2) read as far as the reorder depth, and finding the SPS inside an `avc1`/`hvc1`
//! sample entry. Pure, no I/O; every input is untrusted (a camera's SDP or bitstream) and a
//! malformed one yields `None`, never a panic. Does not belong here: deriving decode times
//! (`reorder`), codec strings and sample entries (retina, converted in `rtsp`).

use crate::media::VideoCodec;
use crate::mp4::entry::child_box;

/// What the SPS says about reordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReorderDepth {
    /// Output order is decode order.
    None,
    /// At most this many frames are reordered (`max_num_reorder_frames` /
    /// `sps_max_num_reorder_pics`).
    Frames(u32),
    /// The SPS allows reordering but does not say how deep (H.264 without
    /// `bitstream_restriction`): learn it from the stream.
    Unknown,
}

/// The reorder depth of a video track from its `avc1`/`hvc1` sample entry, if its SPS can be
/// found and read.
pub fn reorder_depth(codec: VideoCodec, sample_entry: &[u8]) -> Option<ReorderDepth> {
    let sps = match codec {
        VideoCodec::H264 => avcc_sps(child_box(sample_entry, b"avcC")?)?,
        VideoCodec::H265 => hvcc_sps(child_box(sample_entry, b"hvcC")?)?,
    };
    match codec {
        VideoCodec::H264 => h264_reorder_depth(sps),
        VideoCodec::H265 => h265_reorder_depth(sps),
    }
}

/// The first SPS of an `avcC` record (ISO/IEC 14496-15 5.3.3.1).
fn avcc_sps(c: &[u8]) -> Option<&[u8]> {
    if *c.get(5)? & 0x1f == 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*c.get(6)?, *c.get(7)?]));
    c.get(8..8 + len)
}

/// The first SPS (NAL type 33) of an `hvcC` record (ISO/IEC 14496-15 8.3.3.1).
fn hvcc_sps(c: &[u8]) -> Option<&[u8]> {
    let arrays = *c.get(22)?;
    let mut at = 23;
    for _ in 0..arrays {
        let kind = c.get(at)? & 0x3f;
        let n = u16::from_be_bytes([*c.get(at + 1)?, *c.get(at + 2)?]);
        at += 3;
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes([*c.get(at)?, *c.get(at + 1)?]));
            let nal = c.get(at + 2..at + 2 + len)?;
            if kind == 33 {
                return Some(nal);
            }
            at += 2 + len;
        }
    }
    None
}

/// Reads bits of a NAL unit payload, skipping emulation prevention bytes (`00 00 03`).
pub struct BitReader<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    pub fn bit(&mut self) -> Option<bool> {
        if self.bit == 0 {
            // At a byte boundary: drop an emulation prevention byte.
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte)?;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        let b = self.data.get(self.byte)?;
        let v = (b >> (7 - self.bit)) & 1 == 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(v)
    }

    /// `u(n)`, n ≤ 32.
    pub fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n.min(32) {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Some(v)
    }

    pub fn skip(&mut self, n: u32) -> Option<()> {
        for _ in 0..n {
            self.bit()?;
        }
        Some(())
    }

    /// `ue(v)`: unsigned Exp-Golomb, at most 32 leading zeros.
    pub fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// `se(v)`: signed Exp-Golomb.
    pub fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Some(v as i32)
    }
}

/// H.264 profiles whose SPS carries chroma format, bit depths and scaling matrices.
fn h264_high_profile(profile_idc: u32) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: u32) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            // delta_scale is −128..=127 (7.4.2.1.1.1); anything else is not an SPS.
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return None;
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

fn skip_h264_hrd(r: &mut BitReader<'_>) -> Option<()> {
    let cpb_cnt = r.ue()?.checked_add(1)?;
    if cpb_cnt > 32 {
        return None;
    }
    r.skip(8)?; // bit_rate_scale, cpb_size_scale
    for _ in 0..cpb_cnt {
        r.ue()?;
        r.ue()?;
        r.skip(1)?;
    }
    r.skip(20) // four 5-bit lengths
}

/// The reorder depth of an H.264 SPS NAL unit (header byte included).
pub fn h264_reorder_depth(nal: &[u8]) -> Option<ReorderDepth> {
    if nal.first()? & 0x1f != 7 {
        return None;
    }
    let mut r = BitReader::new(nal.get(1..)?);
    let profile_idc = r.bits(8)?;
    let constraints = r.bits(8)?;
    r.skip(8)?; // level_idc
                // Baseline (or a stream that obeys its constraints: constraint_set0_flag) has no B slices.
    if profile_idc == 66 || constraints & 0x80 != 0 {
        return Some(ReorderDepth::None);
    }
    r.ue()?; // seq_parameter_set_id
    if h264_high_profile(profile_idc) {
        let chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.skip(1)?;
        }
        r.ue()?;
        r.ue()?;
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    let poc_type = r.ue()?;
    match poc_type {
        0 => {
            r.ue()?;
        }
        1 => {
            r.skip(1)?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?;
    r.ue()?;
    r.ue()?;
    if !r.bit()? {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    if r.bit()? {
        for _ in 0..4 {
            r.ue()?;
        }
    }
    // Intra-only profiles and POC type 2 never reorder.
    let intra = constraints & 0x10 != 0 && matches!(profile_idc, 100 | 110 | 122 | 244 | 44);
    let no_reorder = intra || poc_type == 2;
    let fallback = if no_reorder {
        ReorderDepth::None
    } else {
        ReorderDepth::Unknown
    };
    if !r.bit()? {
        return Some(fallback); // no VUI
    }
    if r.bit()? {
        // aspect_ratio_info_present_flag
        if r.bits(8)? == 255 {
            r.skip(32)?;
        }
    }
    if r.bit()? {
        r.skip(1)?; // overscan
    }
    if r.bit()? {
        r.skip(4)?;
        if r.bit()? {
            r.skip(24)?;
        }
    }
    if r.bit()? {
        r.ue()?;
        r.ue()?;
    }
    if r.bit()? {
        r.skip(65)?; // timing info
    }
    let nal_hrd = r.bit()?;
    if nal_hrd {
        skip_h264_hrd(&mut r)?;
    }
    let vcl_hrd = r.bit()?;
    if vcl_hrd {
        skip_h264_hrd(&mut r)?;
    }
    if nal_hrd || vcl_hrd {
        r.skip(1)?;
    }
    r.skip(1)?; // pic_struct_present_flag
    if !r.bit()? {
        return Some(fallback); // no bitstream_restriction
    }
    r.skip(1)?;
    for _ in 0..4 {
        r.ue()?;
    }
    let reorder = r.ue()?;
    Some(if reorder == 0 {
        ReorderDepth::None
    } else {
        ReorderDepth::Frames(reorder.min(16))
    })
}

/// Skips `profile_tier_level(1, max_sub_layers_minus1)` (H.265 7.3.3).
fn skip_h265_ptl(r: &mut BitReader<'_>, max_sub_layers_minus1: u32) -> Option<()> {
    r.skip(88)?; // general profile space, tier, idc, compatibility and constraint flags
    r.skip(8)?; // general_level_idc
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(max_sub_layers_minus1 as usize) {
        *p = (r.bit()?, r.bit()?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for &(profile, level) in present.iter().take(max_sub_layers_minus1 as usize) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    Some(())
}

/// The reorder depth of an H.265 SPS NAL unit (two header bytes included):
/// `sps_max_num_reorder_pics` of the highest sub-layer.
pub fn h265_reorder_depth(nal: &[u8]) -> Option<ReorderDepth> {
    if (nal.first()? >> 1) & 0x3f != 33 {
        return None;
    }
    let mut r = BitReader::new(nal.get(2..)?);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    if max_sub_layers_minus1 > 6 {
        return None;
    }
    r.skip(1)?;
    skip_h265_ptl(&mut r, max_sub_layers_minus1)?;
    r.ue()?; // sps_seq_parameter_set_id
    if r.ue()? == 3 {
        r.skip(1)?;
    }
    r.ue()?;
    r.ue()?;
    if r.bit()? {
        for _ in 0..4 {
            r.ue()?;
        }
    }
    r.ue()?;
    r.ue()?;
    r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
    let all = r.bit()?;
    let first = if all { 0 } else { max_sub_layers_minus1 };
    let mut reorder = 0;
    for _ in first..=max_sub_layers_minus1 {
        r.ue()?;
        reorder = r.ue()?;
        r.ue()?;
    }
    Some(if reorder == 0 {
        ReorderDepth::None
    } else {
        ReorderDepth::Frames(reorder.min(16))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264 High, `-bf 3` with b-pyramid (tests/camera/make-clips.sh, h264b.mp4).
    const X264_HIGH_BF3: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
    ];
    /// x264 High, `-bf 0` (h264aac.mp4): bitstream_restriction says 0.
    const X264_HIGH_BF0: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xb4, 0x02, 0x80, 0x2d, 0xd8, 0x08, 0x80, 0x00, 0x00, 0x03,
        0x00, 0x80, 0x00, 0x00, 0x19, 0x07, 0x8c, 0x19, 0x50,
    ];
    /// x265, `bframes=3:b-pyramid=1` (h265b.mp4).
    const X265_BF3: &[u8] = &[
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80, 0x2d, 0x16, 0x59, 0x59, 0x64, 0x93, 0x2b, 0xc0,
        0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32, 0x10,
    ];
    /// x265, `bframes=0` (h265.mp4).
    const X265_BF0: &[u8] = &[
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80, 0x2d, 0x16, 0x5b, 0xa9, 0x24, 0xca, 0xf0, 0x16,
        0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0c, 0x84,
    ];
    /// A Baseline SPS (the start of one, as in src/fmp4.rs's tests): never reorders.
    const BASELINE: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x01, 0x04, 0x6c, 0x04, 0x40];

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        // 1 -> 0; 010 -> 1; 011 -> 2; 00100 -> 3
        let mut r = BitReader::new(&[0b1010_0110, 0b0100_0000]);
        assert_eq!(r.ue(), Some(0));
        assert_eq!(r.ue(), Some(1));
        assert_eq!(r.ue(), Some(2));
        assert_eq!(r.ue(), Some(3));
        // 00 00 03 01: the 03 is skipped.
        let mut r = BitReader::new(&[0, 0, 3, 1]);
        assert_eq!(r.bits(24), Some(1));
        assert_eq!(r.bit(), None);
        let mut r = BitReader::new(&[0b0011_1000]);
        assert_eq!(r.se(), Some(-3));
    }

    #[test]
    fn h264_baseline_never_reorders() {
        assert_eq!(h264_reorder_depth(BASELINE), Some(ReorderDepth::None));
    }

    #[test]
    fn h264_vui_gives_the_reorder_depth() {
        assert_eq!(
            h264_reorder_depth(X264_HIGH_BF3),
            Some(ReorderDepth::Frames(2))
        );
        assert_eq!(h264_reorder_depth(X264_HIGH_BF0), Some(ReorderDepth::None));
    }

    #[test]
    fn h265_sps_gives_the_reorder_depth() {
        assert!(matches!(
            h265_reorder_depth(X265_BF3),
            Some(ReorderDepth::Frames(1..=3))
        ));
        assert_eq!(h265_reorder_depth(X265_BF0), Some(ReorderDepth::None));
    }

    #[test]
    fn h264_high_without_vui_restriction_is_unknown() {
        // High profile, POC type 0, no VUI: may reorder, depth not stated.
        let mut nal = vec![0x67, 0x64, 0x00, 0x1f];
        // sps_id 0 (1), chroma 1 (010), luma 0 (1), chroma 0 (1), bypass 0, scaling 0,
        // log2_max_frame_num 0 (1), poc type 0 (1), lsb 0 (1), refs 1 (010), gaps 0,
        // width 0 (1), height 0 (1), frame_mbs_only 1, direct 1, crop 0, vui 0.
        nal.extend_from_slice(&[0b1010_1100, 0b1110_1001, 0b1110_0000]);
        assert_eq!(h264_reorder_depth(&nal), Some(ReorderDepth::Unknown));
    }

    /// Found by `cargo fuzz run sps`: a scaling-list delta of ±2³¹ overflowed.
    const FUZZ_SCALING_DELTA: &[u8] = &[
        0xa4, 0x27, 0x87, 0x28, 0x2f, 0x01, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x27, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61, 0x43, 0x00, 0x00, 0x00, 0x00, 0xff,
        0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x08, 0x00, 0xff,
        0xff, 0xff, 0x00, 0x30, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0x68, 0x00, 0xa4,
    ];

    #[test]
    fn fuzz_finds_stay_fixed() {
        // The fuzz target's first byte picks the reader (here: 0xa4 % 4 = 0, H.264).
        assert_eq!(h264_reorder_depth(&FUZZ_SCALING_DELTA[1..]), None);
    }

    #[test]
    fn truncated_or_foreign_input_is_none_not_a_panic() {
        for sps in [X264_HIGH_BF3, X265_BF3] {
            for n in 0..sps.len() {
                let _ = h264_reorder_depth(&sps[..n]);
                let _ = h265_reorder_depth(&sps[..n]);
            }
        }
        assert_eq!(h264_reorder_depth(&[0x68, 1, 2]), None);
        assert_eq!(reorder_depth(VideoCodec::H264, &[0; 20]), None);
        assert_eq!(reorder_depth(VideoCodec::H265, &[0xff; 200]), None);
    }
}

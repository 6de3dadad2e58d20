//! Reading the sample entries we build (`avc1`/`hvc1` with their `avcC`/`hvcC`): the one box
//! walk the SPS readers (`source::sps`) and the snapshot decoder input (`snapshot::picture`)
//! share, and the Annex B byte stream (start codes, parameter sets in-band) that decoders fed
//! outside MP4 (OpenH264, RTP for WebRTC) take. Pure.

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The parameter sets of an `avcC` (SPS, PPS) or `hvcC` (VPS, SPS, PPS) in the entry, in
/// decoder order; `None` when the entry has neither box or it is cut short.
pub fn parameter_sets(entry: &[u8]) -> Option<Vec<&[u8]>> {
    fn nal(b: &[u8], at: usize) -> Option<&[u8]> {
        let len = usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
        b.get(at + 2..at + 2 + len)
    }
    let mut out = Vec::new();
    if let Some(avcc) = child_box(entry, b"avcC") {
        let mut at = 5;
        for mask in [0x1f, 0xff] {
            // SPS count (low 5 bits), then PPS count.
            let count = usize::from(*avcc.get(at)? & mask);
            at += 1;
            for _ in 0..count {
                let n = nal(avcc, at)?;
                at += 2 + n.len();
                out.push(n);
            }
        }
        return Some(out);
    }
    let hvcc = child_box(entry, b"hvcC")?;
    let arrays = *hvcc.get(22)?;
    let mut at = 23;
    for _ in 0..arrays {
        let count = usize::from(u16::from_be_bytes([*hvcc.get(at + 1)?, *hvcc.get(at + 2)?]));
        at += 3;
        for _ in 0..count {
            let n = nal(hvcc, at)?;
            at += 2 + n.len();
            out.push(n);
        }
    }
    Some(out)
}

/// A frame's 4-byte length-prefixed NAL units as Annex B, after `prefix` (parameter sets for
/// a keyframe, or nothing); `None` when a length runs past the end.
pub fn annexb(prefix: &[&[u8]], data: &[u8]) -> Option<Vec<u8>> {
    let extra: usize = prefix.iter().map(|p| p.len() + 4).sum();
    let mut out = Vec::with_capacity(data.len() + extra);
    for p in prefix {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(p);
    }
    let mut rest = data;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let nal = rest.get(4..4 + len)?;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
        rest = &rest[4 + len..];
    }
    Some(out)
}

/// The payload of the child box `kind` of a visual sample entry (8-byte header and 78 bytes of
/// fields, then boxes); `None` when it is missing or a box does not fit.
pub fn child_box<'a>(entry: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut at = 8 + 78;
    while at + 8 <= entry.len() {
        let size = u32::from_be_bytes(entry[at..at + 4].try_into().ok()?) as usize;
        if size < 8 || at + size > entry.len() {
            return None;
        }
        if &entry[at + 4..at + 8] == kind {
            return Some(&entry[at + 8..at + size]);
        }
        at += size;
    }
    None
}

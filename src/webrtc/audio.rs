//! Audio for WebRTC. Pure.
//!
//! G.711 cameras reach the hub as FLAC frames of verbatim 16-bit subframes (see
//! `source::g711`): the samples G.711 decodes to, unchanged. This reads such a frame back and
//! encodes its first channel with the viewer's law: the camera's own codes again when the law
//! is the same (`PCMA`→FLAC→`PCMA` is exact), no transcoder and no loss. AAC is not a WebRTC
//! codec; it is not sent (the answer says so).
//!
//! Belongs here: reading our FLAC frames, G.711 coding. Does not belong here: which law a
//! viewer gets (`peer`, from the offer).

use crate::media::G711;

/// The G.711 payload for one FLAC frame (first channel), or `None` when the frame is not
/// FLAC with verbatim 16-bit subframes (what `source::g711` makes).
pub fn g711_from_flac(frame: &[u8], law: G711) -> Option<Vec<u8>> {
    if frame.len() < 6 || frame[0] != 0xff || frame[1] & 0xfe != 0xf8 {
        return None;
    }
    let block_code = frame[2] >> 4;
    let rate_code = frame[2] & 0x0f;
    let channel_code = frame[3] >> 4;
    // Independent channels only (1-8), 16 bits per sample.
    if channel_code > 7 || (frame[3] >> 1) & 0x07 != 0b100 {
        return None;
    }
    // The coded frame/sample number: a UTF-8-like run of 1-7 bytes.
    let lead = frame[4].leading_ones() as usize;
    let coded_len = match lead {
        0 => 1,
        2..=7 => lead,
        _ => return None,
    };
    let mut at = 4 + coded_len;
    let block = match block_code {
        1 => 192,
        2..=5 => 576 << (block_code - 2),
        6 => {
            at += 1;
            usize::from(*frame.get(at - 1)?) + 1
        }
        7 => {
            at += 2;
            usize::from(u16::from_be_bytes([
                *frame.get(at - 2)?,
                *frame.get(at - 1)?,
            ])) + 1
        }
        8..=15 => 256 << (block_code - 8),
        _ => return None,
    };
    at += match rate_code {
        12 => 1,
        13 | 14 => 2,
        15 => return None,
        _ => 0,
    };
    at += 1; // header CRC-8
             // First subframe: verbatim, no wasted bits.
    if *frame.get(at)? != 0b0000_0010 {
        return None;
    }
    let samples = frame.get(at + 1..at + 1 + block * 2)?;
    Some(
        samples
            .chunks_exact(2)
            .map(|s| law.encode(i16::from_be_bytes([s[0], s[1]])))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FLAC frame as `source::g711` makes it: variable block size, 8 kHz, 16-bit
    /// independent channels, the sample number coded in `number`, verbatim subframes.
    fn flac(law: G711, codes: &[u8], channels: u8, number: &[u8]) -> Vec<u8> {
        let block = codes.len() / usize::from(channels);
        let mut f = vec![0xff, 0xf9, 0x74, ((channels - 1) << 4) | 0b1000];
        f.extend_from_slice(number);
        f.extend_from_slice(&((block - 1) as u16).to_be_bytes());
        f.push(0); // CRC-8 (not checked)
        for c in 0..usize::from(channels) {
            f.push(0b0000_0010);
            for code in codes.iter().skip(c).step_by(usize::from(channels)) {
                f.extend_from_slice(&law.decode(*code).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0]); // CRC-16 (not checked)
        f
    }

    #[test]
    fn camera_codes_come_back_unchanged() {
        let codes: Vec<u8> = (0..=255u8).cycle().take(160).collect();
        for law in [G711::A, G711::Mu] {
            for number in [&[0x00][..], &[0xc2, 0x80], &[0xe1, 0x80, 0x80]] {
                let back = g711_from_flac(&flac(law, &codes, 1, number), law).expect("parses");
                let want: Vec<u8> = codes
                    .iter()
                    .map(|&c| {
                        if law == G711::Mu && c == 0x7f {
                            0xff
                        } else {
                            c
                        }
                    })
                    .collect();
                assert_eq!(back, want);
            }
        }
    }

    #[test]
    fn stereo_sends_the_first_channel_and_garbage_is_refused() {
        let f = flac(G711::A, &[0x10, 0x20, 0x11, 0x21], 2, &[0]);
        assert_eq!(g711_from_flac(&f, G711::A), Some(vec![0x10, 0x11]));
        // Header 8 bytes, then the first subframe (1 + 2 × 2).
        for cut in 0..13 {
            // Cut inside the samples or the header: refused, never a panic.
            assert_eq!(g711_from_flac(&f[..cut], G711::A), None, "cut at {cut}");
        }
        assert_eq!(g711_from_flac(b"\xff\xf8junk", G711::A), None);
        assert_eq!(g711_from_flac(b"AAC!", G711::A), None);
    }
}

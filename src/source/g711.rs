//! G.711 audio (A-law `PCMA`, µ-law `PCMU`) repackaged as FLAC at ingest, so that browsers
//! play it over MSE and HLS and the archive records it in MP4, where G.711 has no place.
//!
//! Pure code: no I/O. Each camera packet becomes one FLAC frame of "verbatim" subframes: the
//! G.711 bytes are expanded to the 16-bit PCM they stand for (lossless: that is what G.711
//! means) and framed with FLAC's headers and checksums. No transcoder, no compression:
//! 128 kbit/s per 8 kHz channel, cheap to make. The track is `fLaC` with a `dfLa` box, which
//! Chrome, Firefox, ffmpeg and hls.js play (`codecs="flac"`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::AudioParams;

/// Which G.711 companding law.
pub use crate::media::G711 as Law;

/// The largest FLAC block (samples per channel in one frame).
const MAX_BLOCK: usize = 65_535;

/// Makes FLAC frames from G.711 packets of one track.
#[derive(Debug)]
pub struct FlacPacker {
    law: Law,
    sample_rate: u32,
    channels: u16,
    /// Samples (per channel) framed so far: FLAC's variable-blocksize frames are numbered by it.
    next_sample: u64,
    buf: BytesMut,
}

impl FlacPacker {
    /// `None` when FLAC cannot carry the format (over 8 channels, or a rate over 655 kHz).
    pub fn new(law: Law, sample_rate: u32, channels: u16) -> Option<FlacPacker> {
        if !(1..=8).contains(&channels) || sample_rate == 0 || sample_rate >= 1 << 20 {
            return None;
        }
        Some(FlacPacker {
            law,
            sample_rate,
            channels,
            next_sample: 0,
            buf: BytesMut::new(),
        })
    }

    /// The track's parameters: `flac` with a `fLaC` sample entry.
    pub fn params(&self) -> AudioParams {
        AudioParams {
            rfc6381: "flac".into(),
            sample_rate: self.sample_rate,
            channels: self.channels,
            sample_entry: sample_entry(self.sample_rate, self.channels),
            g711: Some(self.law),
        }
    }

    /// One FLAC frame for one packet of interleaved G.711 codes; `None` for a packet that is
    /// empty, not whole samples, or longer than a FLAC frame may be.
    pub fn frame(&mut self, g711: &[u8]) -> Option<Bytes> {
        let ch = usize::from(self.channels);
        let block = g711.len() / ch;
        if block == 0 || g711.len() % ch != 0 || block > MAX_BLOCK {
            return None;
        }
        let b = &mut self.buf;
        b.reserve(16 + g711.len() * 2 + ch + 2);
        // Header: sync + variable blocksize; "16-bit blocksize follows" + rate code.
        b.put_u16(0xfff9);
        let (rate_code, rate_tail) = rate_code(self.sample_rate);
        b.put_u8(0x70 | rate_code);
        // Independent channels, 16 bits per sample.
        b.put_u8(((self.channels as u8 - 1) << 4) | 0b1000);
        put_coded_number(b, self.next_sample);
        b.put_u16((block - 1) as u16);
        match rate_tail {
            RateTail::None => {}
            RateTail::U8(v) => b.put_u8(v),
            RateTail::U16(v) => b.put_u16(v),
        }
        let crc = crc8(b);
        b.put_u8(crc);
        // One verbatim subframe per channel.
        for c in 0..ch {
            b.put_u8(0b0000_0010);
            for code in g711.iter().skip(c).step_by(ch) {
                b.put_i16(self.law.decode(*code));
            }
        }
        let crc = crc16(b);
        b.put_u16(crc);
        self.next_sample += block as u64;
        Some(self.buf.split().freeze())
    }
}

enum RateTail {
    None,
    U8(u8),
    U16(u16),
}

/// FLAC's sample-rate code for a frame header, and what follows the header for it.
fn rate_code(rate: u32) -> (u8, RateTail) {
    match rate {
        88_200 => (0b0001, RateTail::None),
        176_400 => (0b0010, RateTail::None),
        192_000 => (0b0011, RateTail::None),
        8_000 => (0b0100, RateTail::None),
        16_000 => (0b0101, RateTail::None),
        22_050 => (0b0110, RateTail::None),
        24_000 => (0b0111, RateTail::None),
        32_000 => (0b1000, RateTail::None),
        44_100 => (0b1001, RateTail::None),
        48_000 => (0b1010, RateTail::None),
        96_000 => (0b1011, RateTail::None),
        r if r % 1000 == 0 && r / 1000 < 256 => (0b1100, RateTail::U8((r / 1000) as u8)),
        r if r < 65_536 => (0b1101, RateTail::U16(r as u16)),
        r if r % 10 == 0 && r / 10 < 65_536 => (0b1110, RateTail::U16((r / 10) as u16)),
        _ => (0b0000, RateTail::None), // from STREAMINFO
    }
}

/// FLAC's UTF-8-like coding of a frame's first sample number (up to 36 bits).
fn put_coded_number(b: &mut BytesMut, n: u64) {
    let n = n & ((1 << 36) - 1);
    if n < 0x80 {
        b.put_u8(n as u8);
        return;
    }
    // Bytes after the first: each carries 6 bits.
    let extra = match n {
        n if n < 1 << 11 => 1,
        n if n < 1 << 16 => 2,
        n if n < 1 << 21 => 3,
        n if n < 1 << 26 => 4,
        n if n < 1 << 31 => 5,
        _ => 6,
    };
    let lead_ones = 0xffu8 << (7 - extra); // extra+1 ones, then a zero
    let first_bits = (n >> (6 * extra)) as u8;
    b.put_u8(lead_ones | first_bits);
    for i in (0..extra).rev() {
        b.put_u8(0x80 | ((n >> (6 * i)) & 0x3f) as u8);
    }
}

/// CRC-8, polynomial x^8 + x^2 + x + 1, of the frame header.
fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in data {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-16, polynomial x^16 + x^15 + x^2 + 1, of the whole frame.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A `fLaC` sample entry with its `dfLa` (one STREAMINFO block).
fn sample_entry(sample_rate: u32, channels: u16) -> Bytes {
    use mp4_atom::{Audio, Dfla, Encode, FixedPoint, Flac, FlacMetadataBlock};
    let entry = Flac {
        audio: Audio {
            data_reference_index: 1,
            channel_count: channels,
            sample_size: 16,
            sample_rate: FixedPoint::new(u16::try_from(sample_rate).unwrap_or(0), 0),
        },
        dfla: Dfla {
            blocks: vec![FlacMetadataBlock::StreamInfo {
                minimum_block_size: 16,
                maximum_block_size: MAX_BLOCK as u16,
                minimum_frame_size: mp4_atom::u24::from([0, 0, 0]),
                maximum_frame_size: mp4_atom::u24::from([0, 0, 0]),
                sample_rate,
                num_channels_minus_one: (channels - 1) as u8,
                bits_per_sample_minus_one: 15,
                number_of_interchannel_samples: 0,
                md5_checksum: vec![0; 16],
            }],
        },
    };
    let mut out = Vec::new();
    match entry.encode(&mut out) {
        Ok(()) => Bytes::from(out),
        Err(_) => Bytes::new(), // not reached: every field above is in range
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_tables_match_the_standard_values() {
        assert_eq!(Law::Mu.decode(0xff), 0);
        assert_eq!(Law::Mu.decode(0x7f), 0);
        assert_eq!(Law::Mu.decode(0x00), -32_124);
        assert_eq!(Law::Mu.decode(0x80), 32_124);
        assert_eq!(Law::A.decode(0xd5), 8);
        assert_eq!(Law::A.decode(0x55), -8);
        assert_eq!(Law::A.decode(0xaa), 32_256);
        assert_eq!(Law::A.decode(0x2a), -32_256);
        // Monotonic over each half of the µ-law codes.
        let pos: Vec<i16> = (0x80..=0xffu8).rev().map(|c| Law::Mu.decode(c)).collect();
        assert!(pos.windows(2).all(|w| w[0] <= w[1]), "{pos:?}");
    }

    #[test]
    fn coded_numbers_follow_the_utf8_pattern() {
        let code = |n| {
            let mut b = BytesMut::new();
            put_coded_number(&mut b, n);
            b.to_vec()
        };
        assert_eq!(code(0), vec![0]);
        assert_eq!(code(0x7f), vec![0x7f]);
        assert_eq!(code(0x80), vec![0xc2, 0x80]);
        assert_eq!(code(0x7ff), vec![0xdf, 0xbf]);
        assert_eq!(code(0x800), vec![0xe0, 0xa0, 0x80]);
        assert_eq!(code(160 * 1000), "\u{27100}".as_bytes());
        assert_eq!(code((1 << 36) - 1).len(), 7);
    }

    #[test]
    fn crcs_match_flac_check_values() {
        // The standard check input "123456789".
        assert_eq!(crc8(b"123456789"), 0xf4);
        assert_eq!(crc16(b"123456789"), 0xfee8);
    }

    #[test]
    fn a_frame_has_header_verbatim_samples_and_a_valid_checksum() {
        let mut p = FlacPacker::new(Law::A, 8_000, 1).expect("packer");
        let codes: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let f = p.frame(&codes).expect("frame");
        assert_eq!(&f[..2], &[0xff, 0xf9]);
        assert_eq!(f[2], 0x74, "16-bit blocksize follows; 8 kHz");
        assert_eq!(f[3], 0x08, "mono, 16 bits");
        assert_eq!(f[4], 0, "first sample");
        assert_eq!(u16::from_be_bytes([f[5], f[6]]), 159);
        assert_eq!(crc8(&f[..7]), f[7]);
        assert_eq!(f[8], 0x02, "verbatim");
        assert_eq!(i16::from_be_bytes([f[9], f[10]]), Law::A.decode(0));
        assert_eq!(f.len(), 9 + 320 + 2);
        assert_eq!(
            crc16(&f[..f.len() - 2]),
            u16::from_be_bytes([f[329], f[330]])
        );
        // The next frame is numbered by its first sample.
        let g = p.frame(&codes).expect("frame");
        assert_eq!(&g[4..6], &[0xc2, 0xa0], "sample 160");
        assert!(p.frame(&[]).is_none());
        let mut stereo = FlacPacker::new(Law::Mu, 16_000, 2).expect("packer");
        assert!(stereo.frame(&[1, 2, 3]).is_none(), "half a sample");
        assert!(FlacPacker::new(Law::A, 8_000, 9).is_none());
    }

    #[test]
    fn the_sample_entry_parses_back() {
        use mp4_atom::Decode;
        let p = FlacPacker::new(Law::Mu, 8_000, 1).expect("packer");
        let params = p.params();
        assert_eq!(params.rfc6381, "flac");
        let entry = mp4_atom::Flac::decode(&mut std::io::Cursor::new(&params.sample_entry[..]))
            .expect("fLaC");
        assert_eq!(entry.audio.channel_count, 1);
        match &entry.dfla.blocks[0] {
            mp4_atom::FlacMetadataBlock::StreamInfo {
                sample_rate,
                bits_per_sample_minus_one,
                ..
            } => {
                assert_eq!(*sample_rate, 8_000);
                assert_eq!(*bits_per_sample_minus_one, 15);
            }
            other => panic!("{other:?}"),
        }
    }
}

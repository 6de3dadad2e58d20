//! The websocket frame decoder on arbitrary client bytes: it never panics, never holds more
//! than its cap, and reads the same messages whether the bytes come at once or in pieces.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use video_server::wsproto::frame::{Decoder, Inbound, Violation};

const CAP: usize = 4096;

fn decode(chunks: &[&[u8]]) -> (Vec<Inbound>, Option<Violation>) {
    let mut d = Decoder::new(CAP);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(m)) => {
                    if let Inbound::Text(t) | Inbound::Close(Some((_, t))) = &m {
                        assert!(t.len() <= CAP);
                    }
                    out.push(m)
                }
                Ok(None) => break,
                Err(v) => return (out, Some(v)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let whole = decode(&[bytes]);
    let step = usize::from(split).max(1);
    let pieces: Vec<&[u8]> = bytes.chunks(step).collect();
    assert_eq!(decode(&pieces), whole);
});

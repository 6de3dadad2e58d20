//! RFC 6455 framing, server side: pure, no I/O. Headers for what the server sends (unmasked,
//! never fragmented) and a decoder for what clients send (masked, possibly fragmented).
//!
//! Belongs here: bytes of frames. Does not belong here: the socket (`socket`), the handshake
//! (`upgrade`), what the messages mean (`wsproto`).

use bytes::{Buf, Bytes, BytesMut};

/// Opcodes (RFC 6455 §5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Longest frame header the server writes: 2 bytes and a 64-bit length.
pub const MAX_HEADER: usize = 10;
/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL: usize = 125;

/// Close codes the decoder's errors map to.
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Appends the header of an unmasked, final frame with `len` payload bytes.
pub fn put_header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.extend_from_slice(&[0x80 | (opcode & 0x0F)]);
    if len < 126 {
        out.extend_from_slice(&[len as u8]);
    } else if let Ok(short) = u16::try_from(len) {
        out.extend_from_slice(&[126]);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.extend_from_slice(&[127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The payload of a close frame: the code and a reason cut to fit a control frame (at a
/// character boundary).
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut b = BytesMut::with_capacity(2 + end);
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&reason.as_bytes()[..end]);
    b.freeze()
}

/// A whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The code and reason, if the client sent them.
    Close(Option<(u16, String)>),
}

/// Why a client's bytes cannot be read: the connection ends with [`Violation::close_code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("client frame not masked")]
    Unmasked,
    #[error("reserved bits set (no extension was agreed)")]
    Reserved,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("control frame fragmented or over 125 bytes")]
    Control,
    #[error("continuation without a message, or a new message inside one")]
    Continuation,
    #[error("message over {0} bytes")]
    TooBig(usize),
    #[error("text message not UTF-8")]
    Utf8,
    #[error("close frame with a bad code or reason")]
    BadClose,
}

impl Violation {
    /// The close code that tells the client what it did.
    pub fn close_code(&self) -> u16 {
        match self {
            Violation::TooBig(_) => CLOSE_TOO_BIG,
            Violation::Utf8 | Violation::BadClose => CLOSE_INVALID_DATA,
            _ => CLOSE_PROTOCOL,
        }
    }
}

/// Reads client frames out of a buffer as bytes arrive; holds a fragmented message between
/// calls. Messages (and fragments) over `max_message` bytes are refused before they are read.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// The opcode and data of a fragmented message in progress.
    partial: Option<(u8, BytesMut)>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// The next whole message in `buf`, consuming its frames; `Ok(None)` when more bytes are
    /// needed (what is there stays in `buf`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, Violation> {
        loop {
            let Some((fin, opcode, payload)) = self.frame(buf)? else {
                return Ok(None);
            };
            if opcode >= OP_CLOSE {
                return control(opcode, payload).map(Some);
            }
            let data = match (opcode, self.partial.take()) {
                (OP_CONTINUATION, None) | (OP_TEXT | OP_BINARY, Some(_)) => {
                    return Err(Violation::Continuation)
                }
                (OP_CONTINUATION, Some((op, mut acc))) => {
                    if acc.len() + payload.len() > self.max_message {
                        return Err(Violation::TooBig(self.max_message));
                    }
                    acc.extend_from_slice(&payload);
                    if !fin {
                        self.partial = Some((op, acc));
                        continue;
                    }
                    (op, acc.freeze())
                }
                (op, None) => {
                    if !fin {
                        self.partial = Some((op, BytesMut::from(&payload[..])));
                        continue;
                    }
                    (op, payload)
                }
                _ => return Err(Violation::Opcode(opcode)),
            };
            return match data {
                (OP_TEXT, b) => String::from_utf8(b.to_vec())
                    .map(|t| Some(Inbound::Text(t)))
                    .map_err(|_| Violation::Utf8),
                (_, b) => Ok(Some(Inbound::Binary(b))),
            };
        }
    }

    /// One frame, unmasked: (fin, opcode, payload), or `None` until it is all in `buf`.
    fn frame(&self, buf: &mut BytesMut) -> Result<Option<(bool, u8, Bytes)>, Violation> {
        let [b0, b1, ..] = buf[..] else {
            return Ok(None);
        };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 {
            return Err(Violation::Reserved);
        }
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(Violation::Opcode(opcode));
        }
        if b1 & 0x80 == 0 {
            return Err(Violation::Unmasked);
        }
        let (len, at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|l| <[u8; 8]>::try_from(l).ok()) {
                Some(l) => (u64::from_be_bytes(l), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if opcode >= OP_CLOSE && (!fin || len > MAX_CONTROL as u64) {
            return Err(Violation::Control);
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.max_message)
            .ok_or(Violation::TooBig(self.max_message))?;
        let Some(mask) = buf
            .get(at..at + 4)
            .and_then(|m| <[u8; 4]>::try_from(m).ok())
        else {
            return Ok(None);
        };
        if buf.len() < at + 4 + len {
            return Ok(None);
        }
        buf.advance(at + 4);
        let mut payload = buf.split_to(len);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        Ok(Some((fin, opcode, payload.freeze())))
    }
}

fn control(opcode: u8, payload: Bytes) -> Result<Inbound, Violation> {
    Ok(match opcode {
        OP_PING => Inbound::Ping(payload),
        OP_PONG => Inbound::Pong,
        _ => match payload.len() {
            0 => Inbound::Close(None),
            1 => return Err(Violation::BadClose),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason =
                    String::from_utf8(payload[2..].to_vec()).map_err(|_| Violation::BadClose)?;
                // Codes a peer may send (RFC 6455 §7.4): 1000–1014 but not the reserved
                // ones, and the registered/private ranges.
                let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                if !valid {
                    return Err(Violation::BadClose);
                }
                Inbound::Close(Some((code, reason)))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Inbound>, Violation> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        for (len, want) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65_535, vec![0x82, 126, 0xff, 0xff]),
            (65_536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut b = BytesMut::new();
            put_header(&mut b, OP_BINARY, len);
            assert_eq!(&b[..], &want[..], "{len}");
        }
    }

    #[test]
    fn reads_masked_messages_split_anywhere() {
        let mut bytes = client(true, OP_TEXT, b"ping");
        bytes.extend(client(false, OP_TEXT, "h\u{e9}".as_bytes()));
        bytes.extend(client(true, OP_PING, b"x")); // control frames may interleave
        bytes.extend(client(true, OP_CONTINUATION, b"llo"));
        bytes.extend(client(true, OP_BINARY, &[7u8; 300]));
        bytes.extend(client(true, OP_CLOSE, b"\x03\xe8bye"));
        let want = vec![
            Inbound::Text("ping".into()),
            Inbound::Ping(Bytes::from_static(b"x")),
            Inbound::Text("h\u{e9}llo".into()),
            Inbound::Binary(Bytes::from(vec![7u8; 300])),
            Inbound::Close(Some((1000, "bye".into()))),
        ];
        // Byte by byte: nothing is lost between partial reads.
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &bytes {
            buf.extend_from_slice(&[*b]);
            while let Some(m) = d.decode(&mut buf).expect("valid") {
                got.push(m);
            }
        }
        assert_eq!(got, want);
        assert_eq!(
            decode_all(&mut Decoder::new(1024), &bytes).expect("valid"),
            want
        );
    }

    #[test]
    fn refuses_what_the_rfc_forbids() {
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            (vec![0x81, 0x01, b'a'], Violation::Unmasked),
            (
                {
                    let mut f = client(true, OP_TEXT, b"a");
                    f[0] |= 0x40;
                    f
                },
                Violation::Reserved,
            ),
            (client(true, 0x3, b""), Violation::Opcode(3)),
            (client(false, OP_PING, b""), Violation::Control),
            (client(true, OP_PING, &[0; 126]), Violation::Control),
            (client(true, OP_CONTINUATION, b"a"), Violation::Continuation),
            (
                [client(false, OP_TEXT, b"a"), client(true, OP_TEXT, b"b")].concat(),
                Violation::Continuation,
            ),
            (client(true, OP_BINARY, &[0; 65]), Violation::TooBig(64)),
            (
                [
                    client(false, OP_BINARY, &[0; 40]),
                    client(true, 0, &[0; 40]),
                ]
                .concat(),
                Violation::TooBig(64),
            ),
            (client(true, OP_TEXT, &[0xff, 0xfe]), Violation::Utf8),
            (client(true, OP_CLOSE, b"\x03"), Violation::BadClose),
            (client(true, OP_CLOSE, b"\x03\xed"), Violation::BadClose), // 1005 is reserved
        ];
        for (bytes, want) in cases {
            assert_eq!(
                decode_all(&mut Decoder::new(64), &bytes),
                Err(want.clone()),
                "{want}"
            );
        }
        // A huge declared length is refused from the header, before any payload arrives.
        let mut d = Decoder::new(64);
        let mut buf = BytesMut::from(&[0x82u8, 0xFF, 0x7f, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(d.decode(&mut buf), Err(Violation::TooBig(64)));
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let long = "\u{e9}".repeat(100); // 200 bytes
        let p = close_payload(1011, &long);
        assert!(p.len() <= MAX_CONTROL);
        assert_eq!(&p[..2], &1011u16.to_be_bytes());
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}

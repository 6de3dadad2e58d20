//! The websocket both players speak, live (`mse`) and archive (`archive::ws`): our own
//! server-side RFC 6455 websocket (`upgrade`, `frame`, `socket`; it writes shared payloads
//! without copying them, which a general-purpose websocket library cannot), and the
//! original's messages on it: binary `0x09`+codec list, its 1011 close with a reason, our JSON
//! text events and the query flags they share.
//!
//! Belongs here: the websocket and message shapes. Does not belong here: sessions, which
//! stream is played, fMP4 bytes (`mp4`).

pub mod frame;
pub mod socket;
pub mod upgrade;

pub use frame::Inbound;
pub use socket::{Message, Receiver, Sender, Socket, WsError};
pub use upgrade::{HandshakeError, Io, Upgrade};

use crate::media::StreamParams;

/// Close code the original uses for every error.
pub const CLOSE_ERROR: u16 = 1011;
/// Close code when the server shuts down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// The original's error close: 1011 and the reason.
pub fn close(reason: &str) -> Message {
    Message::Close(CLOSE_ERROR, reason.into())
}

/// The close sent to every viewer at shutdown.
pub fn going_away() -> Message {
    Message::Close(CLOSE_GOING_AWAY, "Server is shutting down".into())
}

/// A JSON text event (`events=1`).
pub fn event(json: serde_json::Value) -> Message {
    Message::Text(json.to_string())
}

/// The protocol's first message: `0x09` and the codec list (binary).
pub fn codecs_message(params: &StreamParams) -> Message {
    let list = params.codec_list();
    let mut b = Vec::with_capacity(1 + list.len());
    b.push(0x09);
    b.extend_from_slice(list.as_bytes());
    Message::binary(b.into())
}

/// A boolean query flag: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, else `default`.
pub fn flag(v: &Option<String>, default: bool) -> bool {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("1" | "true" | "yes" | "on") => true,
        Some("0" | "false" | "no" | "off") => false,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_every_spelling_and_fall_back_to_the_default() {
        for on in ["1", "true", "YES", "On"] {
            assert!(flag(&Some(on.into()), false), "{on}");
        }
        for off in ["0", "false", "No", "OFF"] {
            assert!(!flag(&Some(off.into()), true), "{off}");
        }
        assert!(flag(&None, true));
        assert!(!flag(&Some("maybe".into()), false));
    }

    #[test]
    fn closes_carry_the_originals_code_and_reason() {
        assert_eq!(
            close("Stream not found"),
            Message::Close(CLOSE_ERROR, "Stream not found".into())
        );
        assert!(matches!(going_away(), Message::Close(CLOSE_GOING_AWAY, _)));
    }
}

//! A camera followed through another node of the fleet: the owner's live MSE websocket
//! (`/ws/live?stream_id=…&catchup=0`) read back into frames, so every output of this node
//! (MSE, HLS, snapshots) works for a camera it does not own, with one upstream connection per
//! camera per node however many viewers it has here.
//!
//! The owner sends `0x09`+codecs, an init segment, then one `moof`+`mdat` per frame; the MP4
//! reader turns each fragment back into samples with their decode times and composition
//! offsets, and they enter the timeline as a file's would.
//!
//! Belongs here: the websocket client and the fragment-to-frame step. Does not belong here:
//! who owns what (`cluster`), fMP4 parsing (`mp4::movie`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Emitter, SourceError};
use crate::mp4::movie::Movie;

/// Connecting may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a binary message is an init segment (it starts with `ftyp` or `moov`).
fn is_init(b: &[u8]) -> bool {
    matches!(b.get(4..8), Some(b"ftyp" | b"moov"))
}

/// Follows `url` until the owner closes, the connection fails or no frame comes for
/// `no_frame`.
pub async fn run_session(
    url: &str,
    no_frame: Duration,
    emit: &mut Emitter<'_>,
) -> Result<(), SourceError> {
    let (mut ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| SourceError::Timeout("the owner node's websocket"))?
        .map_err(|e| SourceError::Peer(e.to_string()))?;
    let mut init: Option<Bytes> = None;
    loop {
        let msg = tokio::time::timeout(no_frame, ws.next())
            .await
            .map_err(|_| SourceError::Stalled(no_frame))?;
        let data = match msg {
            None => return Err(SourceError::Ended),
            Some(Err(e)) => return Err(SourceError::Peer(e.to_string())),
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(SourceError::Peer(format!(
                    "the owner closed the stream: {reason}"
                )));
            }
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(_)) => continue, // text events, pings (answered by the library)
        };
        let received = std::time::Instant::now();
        if data.first() == Some(&0x09) {
            continue; // the codec list; the init segment follows
        }
        if is_init(&data) {
            let movie = Movie::parse(data.clone())
                .map_err(|e| SourceError::Peer(format!("init segment: {e}")))?;
            emit.set_params(std::sync::Arc::clone(&movie.params));
            emit.audio_frame_len(movie.audio_frame_90k);
            init = Some(data);
            continue;
        }
        let Some(init) = &init else {
            continue;
        };
        let mut whole = BytesMut::with_capacity(init.len() + data.len());
        whole.extend_from_slice(init);
        whole.extend_from_slice(&data);
        let movie = Movie::parse(whole.freeze())
            .map_err(|e| SourceError::Peer(format!("fragment: {e}")))?;
        for s in &movie.samples {
            emit.frame(
                s.track,
                s.dts_90k + i64::from(s.cto_90k),
                Some(s.cto_90k),
                s.is_key,
                movie.payload(s),
                received,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_segments_are_told_from_fragments() {
        assert!(is_init(b"\0\0\0\x18ftypiso5"));
        assert!(is_init(b"\0\0\0\x18moov...."));
        assert!(!is_init(b"\0\0\0\x18moof...."));
        assert!(!is_init(b"\x09avc1"));
        assert!(!is_init(b""));
    }
}

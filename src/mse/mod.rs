//! Live MSE over websocket, the original's protocol (§6 of its description), made instant and
//! unstickable.
//!
//! `GET /ws/<anything>?stream_id=<uuid>` (or the id as the path segment) upgrades (in
//! `api::live`), then [`session`] sends a
//! binary `0x09`+codec list, a binary init segment and one binary `moof`+`mdat` per frame. Text
//! `ping` gets text `pong`. Errors after the upgrade close with 1011 and a reason.
//!
//! Ours on top: start from the GOP cache (with catch-up to the live edge, `catchup=0` turns it
//! off), a new `0x09`+init on codec change, resync at a keyframe after lag, server pings on idle
//! sockets, and opt-in JSON text events with `events=1`: `online`, `offline`, `codec_changed`,
//! `dropped`.
//!
//! Belongs here: the websocket session and its muxing state (`viewer`). Does not belong here:
//! the upgrade, limits and finding the stream (`api::live`), message shapes shared with archive
//! playback (`wsproto`), fMP4 bytes (`mp4::fmp4`).

mod viewer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::hub::{RecvError, StreamHub};
use crate::wsproto::socket::CLOSE_LINGER;
use crate::wsproto::{
    close, event, going_away, Inbound, Io, Message, Socket, WsError, CLOSE_ERROR,
};
pub use viewer::{Out, ViewerMux};

/// Frames read from the ring per wake-up at most.
const BATCH: usize = 64;
/// A socket with nothing to send for this long gets a websocket ping.
const IDLE_PING: Duration = Duration::from_secs(10);
/// A viewer about to be sent frames older than this is moved to the newest keyframe.
const MAX_BEHIND_MS: i64 = 3000;
/// A single send blocked this long means the client is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);

/// What a viewer asked for in its query.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Send JSON text events (`events=1`).
    pub events: bool,
    /// Catch up through the GOP cache to the live edge (`catchup=0` turns it off).
    pub catchup: bool,
}

/// The `online` / `offline` event (with the reason when offline).
fn health_event(online: bool, error: Option<String>) -> Message {
    event(if online {
        serde_json::json!({"type": "online"})
    } else {
        serde_json::json!({"type": "offline", "error": error})
    })
}

/// What the reader task passes on.
enum FromClient {
    Msg(Inbound),
    /// The client broke the protocol: close with this code and reason.
    Violation(u16, String),
}

/// Serves one viewer on an upgraded connection until it leaves, the stream goes away or the
/// server shuts down. `hold` (its demand on the upstream, its place under `[limits]`) is
/// dropped when the session ends. Client messages over `max_message` bytes end it.
pub async fn session(
    io: Io,
    max_message: usize,
    hub: Arc<StreamHub>,
    hold: impl Send,
    opts: Options,
    shutdown: CancellationToken,
) {
    let _hold = hold;
    let Socket { mut tx, mut rx } = Socket::new(io, max_message);
    let Options { events, catchup } = opts;
    info!(events, catchup, "viewer connected");

    // Client messages are read by their own task so that a slow send never delays a pong and a
    // closed socket is noticed at once. Bounded: a client flooding text waits for us.
    let (inbox_tx, mut inbox) = mpsc::channel::<FromClient>(16);
    let mut reader = tokio::spawn(async move {
        loop {
            let msg = match rx.recv().await {
                Some(Ok(m)) => FromClient::Msg(m),
                Some(Err(WsError::Protocol(v))) => {
                    FromClient::Violation(v.close_code(), v.to_string())
                }
                None | Some(Err(_)) => break,
            };
            let stop = matches!(
                msg,
                FromClient::Violation(..) | FromClient::Msg(Inbound::Close(_))
            );
            if inbox_tx.send(msg).await.is_err() || stop {
                break;
            }
        }
    });

    // Frames that arrived before this instant are the GOP cache, not live: their age says
    // nothing about the latency the gateway adds.
    let joined = std::time::Instant::now();
    let mut sub = hub.subscribe();
    let mut health = hub.watch_health();
    let mut was_online = health.borrow_and_update().online;
    let mut mux = ViewerMux::new(catchup.then(crate::media::unix_ms_now));
    let mut frames = Vec::with_capacity(BATCH);
    let mut outs = Vec::with_capacity(BATCH + 4);
    let mut last_send = tokio::time::Instant::now();
    let mut ping = tokio::time::interval(IDLE_PING);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    if events
        && tx
            .send(health_event(was_online, hub.health().last_error))
            .await
            .is_err()
    {
        reader.abort();
        return;
    }

    // `Some(close)`: end with this close frame; `None`: the connection is gone.
    let mut client_closed = false;
    let end: Option<Message> = loop {
        tokio::select! {
            // Frames first: a wake-up for frames polls nothing else (with a thousand viewers
            // the other branches' polls were a tenth of the fan-out's CPU). The other branches
            // are polled whenever no frames are waiting, i.e. between every two batches.
            biased;
            r = sub.recv(&mut frames, BATCH) => {
                // Behind: the ring moved past this viewer, or what it would get now is older
                // than MAX_BEHIND_MS. Either way it continues at the newest keyframe.
                let skipped = match r {
                    Ok(_) => {
                        let behind_ms = frames.first().map_or(0, |f| crate::media::unix_ms_now() - f.wall_ms);
                        if behind_ms > MAX_BEHIND_MS {
                            Some(sub.skip_to_newest_key()).filter(|&n| n > 0)
                        } else {
                            None
                        }
                    }
                    Err(RecvError::Lagged { skipped }) => Some(skipped),
                    Err(RecvError::Closed) => break Some(close("Stream has been removed")),
                };
                if let Some(skipped) = skipped {
                    debug!(skipped, "viewer behind; resyncing at the newest keyframe");
                    frames.clear();
                    mux.resync();
                    if events {
                        tx.feed(event(serde_json::json!({"type": "dropped", "frames": skipped})));
                    }
                    continue;
                }
                // The batch's worst case: its oldest live frame.
                let oldest_live = frames.iter().map(|f| f.received).filter(|&r| r >= joined).min();
                for f in frames.drain(..) {
                    mux.push(&f, &mut outs);
                }
                for o in outs.drain(..) {
                    tx.feed(match o {
                        Out::Codecs(b) | Out::Init(b) => Message::binary(b),
                        Out::Fragment { head, data } => Message::Binary(vec![head, data]),
                        Out::CodecChanged(codecs) => {
                            if !events { continue; }
                            event(serde_json::json!({"type": "codec_changed", "codecs": codecs}))
                        }
                    });
                }
                // One vectored write for the whole batch.
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, tx.flush()).await, Ok(Ok(()))) {
                    break None;
                }
                if let Some(r) = oldest_live {
                    hub.stats.mse_send_delay.record(r.elapsed());
                }
                last_send = tokio::time::Instant::now();
            }
            msg = inbox.recv() => match msg {
                Some(FromClient::Msg(Inbound::Text(t))) if t.trim() == "ping" => {
                    if tx.send(Message::Text("pong".into())).await.is_err() {
                        break None;
                    }
                }
                Some(FromClient::Msg(Inbound::Ping(b))) => {
                    if tx.send(Message::Pong(b)).await.is_err() {
                        break None;
                    }
                }
                Some(FromClient::Msg(Inbound::Close(_))) => {
                    client_closed = true;
                    break Some(Message::Close(1000, String::new()));
                }
                Some(FromClient::Violation(code, reason)) => break Some(Message::Close(code, reason)),
                None => break None,
                Some(FromClient::Msg(_)) => {} // other client messages are read and ignored, as in the original
            },
            changed = health.changed() => {
                if changed.is_err() { break Some(close("Stream has been removed")); }
                let (online, err) = {
                    let h = health.borrow_and_update();
                    (h.online, h.last_error.clone())
                };
                if events && online != was_online && tx.send(health_event(online, err)).await.is_err() {
                    break None;
                }
                was_online = online;
            }
            _ = ping.tick() => {
                if last_send.elapsed() >= IDLE_PING {
                    if tx.send(Message::Ping(bytes::Bytes::from_static(b"vs"))).await.is_err() {
                        break None;
                    }
                    last_send = tokio::time::Instant::now();
                }
            }
            _ = shutdown.cancelled() => break Some(going_away()),
        }
    };
    if let Some(frame) = end {
        // At shutdown the streams are removed too; whichever the viewer noticed first, it is
        // told the server is going away.
        let frame = if shutdown.is_cancelled() && matches!(frame, Message::Close(CLOSE_ERROR, _)) {
            going_away()
        } else {
            frame
        };
        if tx.send(frame).await.is_ok() && !client_closed {
            // Let the client read the close before the connection goes: the reader ends at
            // the client's close (the inbox is gone) or end of stream. A connection dropped
            // with the client's bytes unread would be reset, and a reset can discard the
            // close before the client reads it.
            drop(inbox);
            let _ = tokio::time::timeout(CLOSE_LINGER, &mut reader).await;
        }
    }
    reader.abort();
    info!("viewer disconnected");
}

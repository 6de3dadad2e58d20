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

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::hub::{RecvError, StreamHub};
use crate::wsproto::{close, event, going_away};
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

/// Serves one viewer on an upgraded socket until it leaves, the stream goes away or the
/// server shuts down. `hold` (its demand on the upstream, its place under `[limits]`) is
/// dropped when the session ends.
pub async fn session(
    socket: WebSocket,
    hub: Arc<StreamHub>,
    hold: impl Send,
    opts: Options,
    shutdown: CancellationToken,
) {
    let _hold = hold;
    let (mut tx, mut rx) = socket.split();
    let Options { events, catchup } = opts;
    info!(events, catchup, "viewer connected");

    // Client messages are read by their own task so that a slow send never delays a pong and a
    // closed socket is noticed at once. Bounded: a client flooding text waits for us.
    let (inbox_tx, mut inbox) = mpsc::channel::<Message>(16);
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            let stop = matches!(msg, Message::Close(_));
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

    let end_reason: Option<&str> = loop {
        tokio::select! {
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
                    Err(RecvError::Closed) => break Some("Stream has been removed"),
                };
                if let Some(skipped) = skipped {
                    debug!(skipped, "viewer behind; resyncing at the newest keyframe");
                    frames.clear();
                    mux.resync();
                    if events && tx.feed(event(serde_json::json!({"type": "dropped", "frames": skipped}))).await.is_err() {
                        break None;
                    }
                    continue;
                }
                // The batch's worst case: its oldest live frame.
                let oldest_live = frames.iter().map(|f| f.received).filter(|&r| r >= joined).min();
                for f in frames.drain(..) {
                    mux.push(&f, &mut outs);
                }
                let mut failed = false;
                for o in outs.drain(..) {
                    let msg = match o {
                        Out::Codecs(b) | Out::Init(b) | Out::Fragment(b) => Message::Binary(b),
                        Out::CodecChanged(codecs) => {
                            if !events { continue; }
                            event(serde_json::json!({"type": "codec_changed", "codecs": codecs}))
                        }
                    };
                    match tokio::time::timeout(SEND_TIMEOUT, tx.feed(msg)).await {
                        Ok(Ok(())) => {}
                        _ => { failed = true; break; }
                    }
                }
                if failed || !matches!(tokio::time::timeout(SEND_TIMEOUT, tx.flush()).await, Ok(Ok(()))) {
                    break None;
                }
                if let Some(r) = oldest_live {
                    hub.stats.mse_send_delay.record(r.elapsed());
                }
                last_send = tokio::time::Instant::now();
            }
            msg = inbox.recv() => match msg {
                Some(Message::Text(t)) if t.as_str().trim() == "ping" => {
                    if tx.send(Message::Text(Utf8Bytes::from_static("pong"))).await.is_err() {
                        break None;
                    }
                }
                Some(Message::Close(_)) | None => break None,
                Some(_) => {} // other client messages are read and ignored, as in the original
            },
            changed = health.changed() => {
                if changed.is_err() { break Some("Stream has been removed"); }
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
            _ = shutdown.cancelled() => {
                let _ = tx.send(going_away()).await;
                break None;
            }
        }
    };
    if let Some(reason) = end_reason {
        // At shutdown the streams are removed too; whichever the viewer noticed first, it is
        // told the server is going away.
        let frame = if shutdown.is_cancelled() {
            going_away()
        } else {
            close(reason)
        };
        let _ = tx.send(frame).await;
    }
    reader.abort();
    info!("viewer disconnected");
}

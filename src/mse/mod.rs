//! Live MSE over websocket, the original's protocol (§6 of its description), made instant and
//! unstickable.
//!
//! `GET /ws/<anything>?stream_id=<uuid>` (or the id as the path segment) upgrades, then sends a
//! binary `0x09`+codec list, a binary init segment and one binary `moof`+`mdat` per frame. Text
//! `ping` gets text `pong`. Errors after the upgrade close with 1011 and a reason.
//!
//! Ours on top: start from the GOP cache (with catch-up to the live edge, `catchup=0` turns it
//! off), a new `0x09`+init on codec change, resync at a keyframe after lag, server pings on idle
//! sockets, and opt-in JSON text events with `events=1`: `online`, `offline`, `codec_changed`,
//! `dropped`.
//!
//! Belongs here: the websocket session and its muxing state (`viewer`). Does not belong here:
//! which streams exist (`app`), fMP4 bytes (`fmp4`).

mod viewer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info, Instrument};
use uuid::Uuid;

use crate::api::server::{viewers_busy, ViewerSlot};
use crate::app::App;
use crate::hub::RecvError;
pub use viewer::{Out, ViewerMux};

/// Close code the original uses for every error.
pub const CLOSE_ERROR: u16 = 1011;
/// Frames read from the ring per wake-up at most.
const BATCH: usize = 64;
/// A socket with nothing to send for this long gets a websocket ping.
const IDLE_PING: Duration = Duration::from_secs(10);
/// A viewer about to be sent frames older than this is moved to the newest keyframe.
const MAX_BEHIND_MS: i64 = 3000;
/// Read buffer of a viewer connection, bytes.
const CLIENT_READ_BUFFER: usize = 4 * 1024;
/// Largest message a viewer may send, bytes.
const CLIENT_MAX_MESSAGE: usize = 64 * 1024;
/// A single send blocked this long means the client is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    pub stream_id: Option<String>,
    /// `1`/`true`: send JSON text events.
    pub events: Option<String>,
    /// `0`/`false`: play the GOP cache in real time instead of catching up.
    pub catchup: Option<String>,
}

pub(crate) fn flag(v: &Option<String>, default: bool) -> bool {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("1" | "true" | "yes" | "on") => true,
        Some("0" | "false" | "no" | "off") => false,
        _ => default,
    }
}

/// `GET /ws/{segment}`.
pub async fn live_handler(
    State(app): State<Arc<App>>,
    Path(segment): Path<String>,
    Query(q): Query<LiveQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let raw_id = q.stream_id.clone().unwrap_or(segment);
    // A known stream's viewer takes its place under `[limits]` before the upgrade; an unknown
    // one is told so after it, with the original's close reason.
    let hub = Uuid::parse_str(raw_id.trim())
        .ok()
        .and_then(|id| app.hub.get(&id));
    let slot = match hub {
        Some(hub) => match ViewerSlot::reserve(&app.server_stats, &app.config.limits, Some(&hub)) {
            Ok(slot) => Some(slot),
            Err(reason) => return viewers_busy(reason),
        },
        None => None,
    };
    // Viewers send only short texts (`ping`): a small read buffer and a cap on their messages
    // keep a thousand connections cheap (tungstenite's default read buffer is 128 KiB each).
    ws.read_buffer_size(CLIENT_READ_BUFFER)
        .max_message_size(CLIENT_MAX_MESSAGE)
        .max_frame_size(CLIENT_MAX_MESSAGE)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("mse", stream = %raw_id);
            session(app, socket, raw_id, q, slot).instrument(span)
        })
}

pub(crate) fn close(reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CLOSE_ERROR,
        reason: Utf8Bytes::from(reason),
    }))
}

pub(crate) fn event(json: serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(json.to_string()))
}

/// The protocol's first message: `0x09` and the codec list (binary).
pub(crate) fn codecs_message(params: &crate::media::StreamParams) -> Message {
    let list = params.codec_list();
    let mut b = Vec::with_capacity(1 + list.len());
    b.push(0x09);
    b.extend_from_slice(list.as_bytes());
    Message::Binary(b.into())
}

/// The `online` / `offline` event (with the reason when offline).
fn health_event(online: bool, error: Option<String>) -> Message {
    event(if online {
        serde_json::json!({"type": "online"})
    } else {
        serde_json::json!({"type": "offline", "error": error})
    })
}

async fn session(
    app: Arc<App>,
    socket: WebSocket,
    raw_id: String,
    q: LiveQuery,
    slot: Option<ViewerSlot>,
) {
    let (mut tx, mut rx) = socket.split();
    let Ok(id) = Uuid::parse_str(raw_id.trim()) else {
        let _ = tx.send(close(&format!("Not valid UUID: '{raw_id}'"))).await;
        return;
    };
    let (hub, _demand) = match app.acquire_output(&id, |o| o.mse) {
        Ok(found) => found,
        Err(reason) => {
            let _ = tx.send(close(reason)).await;
            return;
        }
    };
    let events = flag(&q.events, false);
    let catchup = flag(&q.catchup, true);
    // A stream that appeared after the upgrade began takes its place now.
    let _slot = match slot {
        Some(slot) => slot,
        None => match ViewerSlot::reserve(&app.server_stats, &app.config.limits, Some(&hub)) {
            Ok(slot) => slot,
            Err(reason) => {
                let _ = tx.send(close(reason)).await;
                return;
            }
        },
    };
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
    let shutdown = app.shutdown.clone();

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
                let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: Utf8Bytes::from_static("Server is shutting down") }))).await;
                break None;
            }
        }
    };
    if let Some(reason) = end_reason {
        // At shutdown the streams are removed too; whichever the viewer noticed first, it is
        // told the server is going away.
        let frame = if shutdown.is_cancelled() {
            Message::Close(Some(CloseFrame {
                code: 1001,
                reason: Utf8Bytes::from_static("Server is shutting down"),
            }))
        } else {
            close(reason)
        };
        let _ = tx.send(frame).await;
    }
    reader.abort();
    info!("viewer disconnected");
}

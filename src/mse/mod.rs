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
//! A viewer's frames are written by its session only until it has caught up; from then on by
//! its stream's writers (`writers`), a few tasks that serve all of the stream's caught-up
//! viewers, so a frame costs one wake-up per core instead of one per viewer. The session takes
//! the viewer back whenever it has something of its own to send, and when the viewer's
//! socket is full.
//!
//! Belongs here: the websocket session, its muxing state (`viewer`), a viewer's sending state
//! (`sending`) and the stream writers (`writers`). Does not belong here:
//! the upgrade, limits and finding the stream (`api::live`), message shapes shared with archive
//! playback (`wsproto`), fMP4 bytes (`mp4::fmp4`).

mod sending;
mod viewer;
mod writers;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::WriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::hub::{RecvError, StreamHub};
use crate::wsproto::socket::CLOSE_LINGER;
use crate::wsproto::{
    close, event, going_away, Inbound, Io, Message, Socket, WsError, CLOSE_ERROR,
};
use sending::{SentAt, Taken, Viewer, BATCH};
pub use viewer::{Out, ViewerMux};
use writers::{Back, Parked, Why};

/// The live viewers' stream writers (one registry per server).
pub type Writers = writers::Writers<WriteHalf<Io>>;
/// A live viewer's sending state.
type LiveViewer = Viewer<WriteHalf<Io>>;

/// A socket with nothing to send for this long gets a websocket ping.
const IDLE_PING: Duration = Duration::from_secs(10);
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

/// Where a viewer's sending state is.
enum Place {
    /// In the session: it reads the ring and writes itself.
    Here(Box<LiveViewer>),
    /// With its stream's writers.
    Parked(Parked<WriteHalf<Io>>),
}

/// What woke a session.
enum Wake {
    Frames(Result<usize, RecvError>),
    /// The writer gave the viewer back (`None`: it was lost with its writer).
    Back(Option<Back<WriteHalf<Io>>>),
    Client(Option<FromClient>),
    /// The stream's health changed (`false`: the stream is gone).
    Health(bool),
    Ping,
    Shutdown,
}

/// How the session goes on after a wake-up.
enum Next {
    /// Hand the viewer to a writer until something needs the session again.
    Park,
    /// Keep reading the ring in the session (after a resync, or when the stream is gone).
    Stay,
    /// End, with this close frame (`None`: the connection is gone).
    End(Option<Message>),
}

/// Serves one viewer on an upgraded connection until it leaves, the stream goes away or the
/// server shuts down. `hold` (its demand on the upstream, its place under `[limits]`) is
/// dropped when the session ends. Client messages over `max_message` bytes end it. Once
/// caught up, its frames are written by its stream's writers (`writers`).
pub async fn session(
    io: Io,
    max_message: usize,
    hub: Arc<StreamHub>,
    writers: Arc<Writers>,
    hold: impl Send,
    opts: Options,
    shutdown: CancellationToken,
) {
    let _hold = hold;
    let Socket { tx, mut rx } = Socket::new(io, max_message);
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

    let mut health = hub.watch_health();
    let mut was_online = health.borrow_and_update().online;
    let mut viewer = Box::new(Viewer {
        tx,
        mux: ViewerMux::new(catchup.then(crate::media::unix_ms_now)),
        sub: hub.subscribe(),
        events,
        joined: std::time::Instant::now(),
        sent_at: SentAt::new(),
        unsent_since: None,
    });
    let sent_at = Arc::clone(&viewer.sent_at);
    let mut frames = Vec::with_capacity(BATCH);
    let mut outs = Vec::with_capacity(BATCH + 4);
    let mut ping = tokio::time::interval(IDLE_PING);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    if events
        && viewer
            .tx
            .send(health_event(was_online, hub.health().last_error))
            .await
            .is_err()
    {
        reader.abort();
        return;
    }

    let mut place = Place::Here(viewer);
    let mut client_closed = false;
    // The close frame to end with (`None`: the connection is gone), and the viewer when the
    // session holds it.
    let (end, viewer): (Option<Message>, Option<Box<LiveViewer>>) = loop {
        let mut wake = match &mut place {
            Place::Here(v) => tokio::select! {
                // Frames first: a wake-up for frames polls nothing else.
                biased;
                r = v.sub.recv(&mut frames, BATCH) => Wake::Frames(r),
                msg = inbox.recv() => Wake::Client(msg),
                changed = health.changed() => Wake::Health(changed.is_ok()),
                _ = ping.tick() => Wake::Ping,
                _ = shutdown.cancelled() => Wake::Shutdown,
            },
            Place::Parked(p) => tokio::select! {
                biased;
                back = &mut p.back => Wake::Back(back.ok()),
                msg = inbox.recv() => Wake::Client(msg),
                changed = health.changed() => Wake::Health(changed.is_ok()),
                _ = ping.tick() => Wake::Ping,
                _ = shutdown.cancelled() => Wake::Shutdown,
            },
        };
        // A health change nobody is told about needs no viewer, nor a ping on a socket that
        // is not idle (a parked viewer stays with its writer).
        if let Wake::Health(true) = wake {
            let online = health.borrow_and_update().online;
            if !events || online == was_online {
                was_online = online;
                continue;
            }
        }
        if matches!(wake, Wake::Ping) && sent_at.idle() < IDLE_PING {
            continue;
        }
        // Everything else needs the viewer here.
        let (mut v, why) = match place {
            Place::Here(v) => (v, None),
            Place::Parked(p) => {
                let back = match &mut wake {
                    Wake::Back(back) => back.take(),
                    _ => p.recall().await,
                };
                match back {
                    Some(Back { viewer, why }) => (viewer, Some(why)),
                    None => break (None, None),
                }
            }
        };
        match why {
            Some(Why::Failed) => break (None, Some(v)),
            Some(Why::Blocked) => {
                // The writer wrote part of a batch; the rest is written here, as slowly as
                // the client reads.
                let oldest_live = v.unsent_since.take();
                if !write_out(&mut v, oldest_live).await {
                    break (None, Some(v));
                }
            }
            _ => {}
        }
        let next = match wake {
            Wake::Frames(r) => match v.take(r, &mut frames, &mut outs, crate::media::unix_ms_now())
            {
                Taken::Closed => Next::End(Some(close("Stream has been removed"))),
                Taken::Resynced => Next::Stay,
                // One vectored write for the whole batch.
                Taken::Queued(oldest_live) => {
                    if write_out(&mut v, oldest_live).await {
                        Next::Park
                    } else {
                        Next::End(None)
                    }
                }
            },
            // Given back because the stream is gone: the ring says so next.
            Wake::Back(_) if why == Some(Why::Closed) => Next::Stay,
            Wake::Back(_) => Next::Park,
            Wake::Client(msg) => match msg {
                Some(FromClient::Msg(Inbound::Text(t))) if t.trim() == "ping" => {
                    reply(&mut v, Message::Text("pong".into())).await
                }
                Some(FromClient::Msg(Inbound::Ping(b))) => reply(&mut v, Message::Pong(b)).await,
                Some(FromClient::Msg(Inbound::Close(_))) => {
                    client_closed = true;
                    Next::End(Some(Message::Close(1000, String::new())))
                }
                Some(FromClient::Violation(code, reason)) => {
                    Next::End(Some(Message::Close(code, reason)))
                }
                None => Next::End(None),
                // Other client messages are read and ignored, as in the original.
                Some(FromClient::Msg(_)) => Next::Park,
            },
            Wake::Health(false) => Next::End(Some(close("Stream has been removed"))),
            Wake::Health(true) => {
                let (online, err) = {
                    let h = health.borrow();
                    (h.online, h.last_error.clone())
                };
                was_online = online;
                reply(&mut v, health_event(online, err)).await
            }
            Wake::Ping => reply(&mut v, Message::Ping(bytes::Bytes::from_static(b"vs"))).await,
            Wake::Shutdown => Next::End(Some(going_away())),
        };
        place = match next {
            Next::End(end) => break (end, Some(v)),
            Next::Stay => Place::Here(v),
            Next::Park => match writers.park(v).await {
                Ok(p) => Place::Parked(p),
                Err(v) => Place::Here(v),
            },
        };
    };
    if let (Some(frame), Some(mut v)) = (end, viewer) {
        // At shutdown the streams are removed too; whichever the viewer noticed first, it is
        // told the server is going away.
        let frame = if shutdown.is_cancelled() && matches!(frame, Message::Close(CLOSE_ERROR, _)) {
            going_away()
        } else {
            frame
        };
        if v.tx.send(frame).await.is_ok() && !client_closed {
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

/// Writes everything queued, waiting for the client at most [`SEND_TIMEOUT`], and notes the
/// batch sent (`oldest_live`: for the delay histogram); `false` when the client is gone.
async fn write_out(v: &mut LiveViewer, oldest_live: Option<std::time::Instant>) -> bool {
    let written = matches!(
        tokio::time::timeout(SEND_TIMEOUT, v.tx.flush()).await,
        Ok(Ok(()))
    );
    if written {
        v.sent(oldest_live);
    }
    written
}

/// Sends one message of the session's own; the viewer is parked again after it.
async fn reply(v: &mut LiveViewer, msg: Message) -> Next {
    match v.tx.send(msg).await {
        Ok(()) => {
            v.sent(None);
            Next::Park
        }
        Err(_) => Next::End(None),
    }
}

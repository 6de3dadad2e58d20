//! The two websocket upgrades: `GET /ws/{segment}` (live MSE, the session is `mse`) and
//! `GET /ws/archive` (archive playback, the session is `archive::ws`).
//!
//! Belongs here: query parsing, the viewer's place under `[limits]` (503 before the upgrade
//! when full), finding the stream, and the original's close reasons for what cannot be
//! played. Does not belong here: what is sent on the socket.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use serde::Deserialize;
use tracing::Instrument;
use uuid::Uuid;

use super::error::ApiError;
use super::server::ViewerSlot;
use super::Ctx;
use crate::archive::ws::ArchiveQuery;
use crate::wsproto::{close, flag, Io, Socket, Upgrade};

/// Largest message a viewer may send, bytes (they send short texts: `ping`, `more`, seeks).
const CLIENT_MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    pub stream_id: Option<String>,
    /// `1`/`true`: send JSON text events.
    pub events: Option<String>,
    /// `0`/`false`: play the GOP cache in real time instead of catching up.
    pub catchup: Option<String>,
}

/// `GET /ws/{segment}`: the original's live MSE websocket.
pub async fn mse(
    State(ctx): State<Arc<Ctx>>,
    Path(segment): Path<String>,
    Query(q): Query<LiveQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let ws = Upgrade::new(&mut req)?;
    let raw_id = q.stream_id.clone().unwrap_or(segment);
    // A known stream's viewer takes its place under `[limits]` before the upgrade; an unknown
    // one is told so after it, with the original's close reason.
    let hub = Uuid::parse_str(raw_id.trim())
        .ok()
        .and_then(|id| ctx.streams.hub(&id));
    let slot = match hub {
        Some(hub) => Some(
            ViewerSlot::reserve(&ctx.server_stats, &ctx.config.limits, Some(&hub))
                .map_err(|reason| ApiError::Busy(reason.into()))?,
        ),
        None => None,
    };
    let opts = crate::mse::Options {
        events: flag(&q.events, false),
        catchup: flag(&q.catchup, true),
    };
    Ok(ws.on_upgrade(move |io| {
        let span = tracing::info_span!("mse", stream = %raw_id);
        start_mse(ctx, io, raw_id, opts, slot).instrument(span)
    }))
}

/// Finds the stream for an upgraded socket and hands both to `mse`; what cannot be played is
/// closed with the original's reason.
async fn start_mse(
    ctx: Arc<Ctx>,
    io: Io,
    raw_id: String,
    opts: crate::mse::Options,
    slot: Option<ViewerSlot>,
) {
    let Ok(id) = Uuid::parse_str(raw_id.trim()) else {
        return refuse(io, format!("Not valid UUID: '{raw_id}'")).await;
    };
    let (hub, demand) = match ctx.streams.live(&id) {
        Ok(found) => found,
        Err(e) => return refuse(io, e.reason().to_string()).await,
    };
    // A stream that appeared after the upgrade began takes its place now.
    let slot = match slot {
        Some(slot) => slot,
        None => match ViewerSlot::reserve(&ctx.server_stats, &ctx.config.limits, Some(&hub)) {
            Ok(slot) => slot,
            Err(reason) => return refuse(io, reason.to_string()).await,
        },
    };
    let shutdown = ctx.shutdown.clone();
    let writers = Arc::clone(&ctx.mse_writers);
    drop(ctx);
    let hold = (demand, slot);
    crate::mse::session(io, CLIENT_MAX_MESSAGE, hub, writers, hold, opts, shutdown).await;
}

/// Closes an upgraded socket with the original's reason.
async fn refuse(io: Io, reason: String) {
    let _ = Socket::new(io, CLIENT_MAX_MESSAGE)
        .close(close(&reason))
        .await;
}

/// `GET /ws/archive`: the original's archive playback websocket.
pub async fn archive(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<ArchiveQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let ws = Upgrade::new(&mut req)?;
    let slot = ViewerSlot::reserve(&ctx.server_stats, &ctx.config.limits, None)
        .map_err(|reason| ApiError::Busy(reason.into()))?;
    let archive = ctx.archive.clone();
    Ok(ws.on_upgrade(move |io| {
        let span = tracing::info_span!("ws_archive", stream = q.stream_id.as_deref().unwrap_or(""));
        async move {
            let _slot = slot;
            let socket = Socket::new(io, CLIENT_MAX_MESSAGE);
            crate::archive::ws::session(archive, socket, q).await
        }
        .instrument(span)
    }))
}

//! `GET /snapshot/{id}.jpg[?width=N]`: the HTTP side of the `snapshot` stage. Answers from the
//! newest cached keyframe at once; a camera started on demand is woken and its first keyframe
//! awaited (bounded); an offline camera's last picture is served with its time
//! (`X-Snapshot-Time`, Unix ms, and `Last-Modified`), or 503 if there never was one.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::error::ApiError;
use super::guard::query_param;
use super::Ctx;
use crate::snapshot::picture;

/// Decoder processes at a time (the machine's cores are shared with the streams).
pub const DECODERS: usize = 2;
/// How long a snapshot of an idle on-demand camera waits for its first keyframe.
const WAKE_WAIT: Duration = Duration::from_secs(10);

pub async fn handler(
    State(ctx): State<Arc<Ctx>>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = file
        .strip_suffix(".jpg")
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::NotFound(format!("no such snapshot: {file} (want <uuid>.jpg)")))?;
    let width =
        picture::parse_width(query_param(query.as_deref().unwrap_or(""), "width").as_deref())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (hub, running, _demand) = ctx
        .streams
        .wake(&id)
        .ok_or_else(|| ApiError::NotFound("Stream not found".into()))?;
    if !running {
        // Woken for this request: wait (bounded) for the keyframe the camera starts with,
        // looking every 50 ms (a new keyframe has no signal of its own to wait on).
        let deadline = tokio::time::Instant::now() + WAKE_WAIT;
        while hub.newest_keyframe().is_none() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = ctx.shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
    let shot = match ctx.snapshots.get(&hub, width).await {
        Ok(s) => s,
        Err(e) => return Ok(e.into_response()),
    };
    let mut r = shot.jpeg.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&shot.taken_ms.to_string()) {
        h.insert("x-snapshot-time", v);
    }
    h.insert(
        "x-snapshot-live",
        HeaderValue::from_static(if shot.live { "true" } else { "false" }),
    );
    if let Some(t) = chrono::DateTime::from_timestamp_millis(shot.taken_ms) {
        let text = t.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    Ok(r)
}

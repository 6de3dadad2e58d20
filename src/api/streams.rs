//! The original's stream routes: `/list`, `/status`, `/enable_camera`, `/disable_camera`, plus
//! our `/streams` (video port) used by the built-in page.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::registry::StreamView;
use super::Ctx;
use crate::config::{Outputs, SourceSpec, StreamConfig, Transport};
use crate::media::StreamParams;

/// Go's zero time, which the original prints for "never".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `GET /list`.
pub async fn list(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let data: Vec<Value> = ctx
        .streams
        .list()
        .iter()
        .map(|s| json!({ "stream_id": s.config.id }))
        .collect();
    Json(json!({ "data": data }))
}

/// Codec parameters as a readable list, video first.
pub fn codecs_json(p: &StreamParams) -> Value {
    let mut out = Vec::new();
    if let Some(v) = &p.video {
        let fps = v
            .frame_rate
            .filter(|&(_, d)| d > 0)
            .map(|(n, d)| f64::from(n) / f64::from(d));
        out.push(json!({
            "type": "video",
            "codec": v.codec,
            "rfc6381": v.rfc6381,
            "width": v.width,
            "height": v.height,
            "fps": fps,
        }));
    }
    if let Some(a) = &p.audio {
        out.push(json!({
            "type": "audio",
            "codec": "aac",
            "rfc6381": a.rfc6381,
            "sample_rate": a.sample_rate,
            "channels": a.channels,
        }));
    }
    Value::Array(out)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ZERO_TIME.to_owned())
}

fn stream_json(s: &StreamView) -> Value {
    let h = s.hub.health();
    let stats = &s.hub.stats;
    let (buffered_frames, buffered_bytes) = s.hub.buffered();
    let mut types = s.config.outputs.codes.clone();
    if matches!(s.config.source, SourceSpec::LocalFile { .. }) {
        types.push(4);
    }
    let mut v = json!({
        "url": s.config.source.display_url(),
        "status": h.online,
        "on_demand": s.config.on_demand,
        "online": h.online,
        "streaming": s.streaming,
        "viewers": stats.mse_viewers.load(Ordering::Relaxed),
        "last_health_check": if h.last_probe_ms > 0 { rfc3339(h.last_probe_ms) } else { ZERO_TIME.to_owned() },
        "last_health_error": h.last_error.clone().unwrap_or_default(),
        "supported_output_types": types,
        "codecs": h.params.as_deref().map(codecs_json),
        // Ours, beyond the original's shape.
        "online_since": (h.since_ms > 0).then(|| rfc3339(h.since_ms)),
        "added_at": rfc3339(s.started_ms),
        "frames_in": stats.frames_in.load(Ordering::Relaxed),
        "keyframes_in": stats.keyframes_in.load(Ordering::Relaxed),
        "bytes_in": stats.bytes_in.load(Ordering::Relaxed),
        "sessions": stats.sessions.load(Ordering::Relaxed),
        "discontinuities": stats.discontinuities.load(Ordering::Relaxed),
        "timestamp_jumps": stats.timestamp_jumps.load(Ordering::Relaxed),
        "rtp_packets_lost": stats.rtp_packets_lost.load(Ordering::Relaxed),
        "reorder_depth": stats.reorder_depth.load(Ordering::Relaxed),
        "frames_dropped_for_slow_viewers": stats.frames_dropped_for_slow_viewers.load(Ordering::Relaxed),
        // Frame arrival (last packet read from the camera) to its fragment written to a
        // viewer's socket, per batch sent.
        "mse_send_delay": stats.mse_send_delay.summary(),
        "webrtc_viewers": stats.webrtc_viewers.load(Ordering::Relaxed),
        "webrtc_send_delay": stats.webrtc_send_delay.summary(),
        "webrtc_keyframe_requests": stats.webrtc_keyframe_requests.load(Ordering::Relaxed),
        "webrtc_nacks": stats.webrtc_nacks.load(Ordering::Relaxed),
        "buffered_frames": buffered_frames,
        "buffered_bytes": buffered_bytes,
        "diagnostics": s.hub.diagnostics(),
    });
    // Ours, in a fleet: the node that pulls the camera.
    if let Some(node) = &s.node {
        v["node"] = json!(node);
    }
    v
}

/// `GET /streams/{id}` (ours): one stream with everything known about it: the `/status` entry
/// plus measured rates, uptime, and its HLS and archive state.
pub async fn stream_details(
    State(ctx): State<Arc<Ctx>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = Uuid::parse_str(id.trim())
        .map_err(|_| ApiError::BadRequest(format!("Not valid UUID: '{id}'")))?;
    let s = ctx
        .streams
        .list()
        .into_iter()
        .find(|s| s.config.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("Stream not found: {id}")))?;
    let mut v = stream_json(&s);
    let h = s.hub.health();
    let now = crate::media::unix_ms_now();
    let rates = s.hub.recent_rates();
    v["stream_id"] = json!(id);
    v["fps_measured"] = json!(rates.map(|r| (r.0 * 100.0).round() / 100.0));
    v["bitrate_bps"] = json!(rates.map(|r| r.1.round()));
    v["uptime_s"] = json!((h.online && h.since_ms > 0).then(|| (now - h.since_ms) / 1000));
    v["keyframe_interval_s"] =
        json!(s.hub.stats.keyframe_interval_90k.load(Ordering::Relaxed) as f64 / 90_000.0);
    v["outputs"] = json!({
        "mse": s.config.outputs.mse,
        "hls": s.config.outputs.hls,
        "webrtc": s.config.outputs.webrtc,
    });
    let clock = &s.hub.stats.clock;
    v["clock"] = json!({
        "camera_offset_ms": clock.offset_ms(),
        "media_clock_drift_ppm": clock.drift_ppm().map(|p| p.round()),
    });
    if let Some(store) = ctx.streams.hls_store(&id) {
        v["hls"] = json!({
            "active": store.active(),
            "viewers": store.sessions.count(now),
            "last_media_sequence": store.lock().last_msn(),
        });
    }
    if let Some(sa) = ctx.archive.as_ref().and_then(|a| a.known(&id)) {
        let (segments, bytes) = sa.with_index(|i| (i.segments().len(), i.total_bytes()));
        v["archive"] = json!({
            "recording": sa.recording,
            "segments": segments,
            "bytes": bytes,
            "recorder": sa.status.snapshot(),
        });
    }
    Ok(Json(v))
}

/// `GET /health` (ours): for load balancers and orchestrators; 200 while the process serves.
pub async fn health(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let streams = ctx.streams.list();
    let online = streams.iter().filter(|s| s.hub.health().online).count();
    Json(json!({
        "status": "ok",
        "streams": streams.len(),
        "online": online,
    }))
}

/// The `/status` document (the original's newer shape).
pub fn status_doc(ctx: &Ctx) -> Value {
    let c = &ctx.config;
    let mut streams = serde_json::Map::new();
    for s in ctx.streams.list() {
        streams.insert(s.config.id.to_string(), stream_json(&s));
    }
    json!({
        "api": { "host": c.api.host, "port": c.api.port },
        "video": { "host": c.video.host, "port": c.video.port },
        "streams": streams,
        "hls": {
            "hls_ms_per_segment": c.hls.ms_per_segment,
            "hls_window_size": c.hls.window_size,
            "hls_window_capacity": c.hls.window_capacity,
        },
        "on_demand": c.on_demand,
    })
}

/// `GET /status`.
pub async fn status(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    Json(status_doc(&ctx))
}

/// The body of `/enable_camera` and `/disable_camera`.
#[derive(Debug, Deserialize)]
struct CameraBody {
    #[serde(default)]
    guid: Option<String>,
    #[serde(default)]
    url: String,
    #[serde(default)]
    output_types: Vec<String>,
    #[serde(default)]
    on_demand: Option<bool>,
}

/// Decodes the body whatever the Content-Type, as gin's binding does.
fn parse_body(body: &[u8]) -> Result<(Uuid, CameraBody), ApiError> {
    let b: CameraBody = serde_json::from_slice(body).map_err(|_| ApiError::BadJson)?;
    let id = match b.guid.as_deref() {
        None => Uuid::nil(),
        Some(g) => Uuid::parse_str(g.trim()).map_err(|_| ApiError::BadJson)?,
    };
    Ok((id, b))
}

/// `POST /enable_camera`.
pub async fn enable_camera(
    State(ctx): State<Arc<Ctx>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (id, b) = parse_body(&body)?;
    let outputs = Outputs::parse(&b.output_types).map_err(ApiError::BadRequest)?;
    if !b.url.is_empty() && url::Url::parse(&b.url).is_err() {
        return Err(ApiError::BadRequest(format!(
            "url is not a valid URL: '{}'",
            crate::config::mask_url(&b.url)
        )));
    }
    let stream = StreamConfig {
        id,
        source: SourceSpec::Rtsp {
            url: b.url,
            transport: Transport::Tcp,
        },
        outputs,
        verbose: String::new(),
        on_demand: b.on_demand.unwrap_or(ctx.config.on_demand.enabled),
        archive: None,
    };
    ctx.streams.add(stream).await;
    Ok(Json(status_doc(&ctx)))
}

/// `POST /disable_camera`.
pub async fn disable_camera(
    State(ctx): State<Arc<Ctx>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (id, _) = parse_body(&body)?;
    ctx.streams.remove(id).await;
    Ok(Json(status_doc(&ctx)))
}

/// `GET /streams` on the video port: what the built-in page needs.
pub async fn video_streams(
    State(ctx): State<Arc<Ctx>>,
    grant: Option<axum::Extension<crate::api::access::Grant>>,
) -> Json<Value> {
    // With auth on, a credential sees the streams it may watch.
    let visible = |id: &Uuid| {
        grant
            .as_ref()
            .is_none_or(|g| g.0.allows(crate::config::auth::Action::Live, Some(id)))
    };
    let list: Vec<Value> = ctx
        .streams
        .list()
        .iter()
        .filter(|s| visible(&s.config.id))
        .map(|s| {
            let h = s.hub.health();
            json!({
                "stream_id": s.config.id,
                "online": h.online,
                "mse": s.config.outputs.mse,
                "hls": s.config.outputs.hls,
                "webrtc": s.config.outputs.webrtc,
                "codecs": h.params.as_deref().map(codecs_json),
                "codec_list": h.params.as_deref().map(StreamParams::codec_list),
                "viewers": s.hub.stats.mse_viewers.load(Ordering::Relaxed),
                "webrtc_viewers": s.hub.stats.webrtc_viewers.load(Ordering::Relaxed),
                "bytes_in": s.hub.stats.bytes_in.load(Ordering::Relaxed),
                "frames_in": s.hub.stats.frames_in.load(Ordering::Relaxed),
                "on_demand": s.config.on_demand,
                "streaming": s.streaming,
                "last_error": h.last_error,
                "diagnostics": s.hub.diagnostics(),
            })
        })
        .collect();
    let api = &ctx.config.api;
    Json(json!({
        "streams": list,
        "api_port": api.enabled.then_some(api.port),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_like_the_original() {
        assert!(matches!(parse_body(b""), Err(ApiError::BadJson)));
        assert!(matches!(parse_body(b"{not json"), Err(ApiError::BadJson)));
        assert!(matches!(
            parse_body(br#"{"guid":"nope"}"#),
            Err(ApiError::BadJson)
        ));
        let (id, _) = parse_body(br#"{"url":"rtsp://x/y"}"#).expect("missing guid is nil");
        assert!(id.is_nil());
        let (id, b) = parse_body(
            br#"{"guid":"0742091c-19cd-4658-9b4f-5320da160f45","url":"rtsp://x","output_types":["mse"],"on_demand":true}"#,
        )
        .expect("parses");
        assert_eq!(id.to_string(), "0742091c-19cd-4658-9b4f-5320da160f45");
        assert_eq!(b.on_demand, Some(true));
    }
}

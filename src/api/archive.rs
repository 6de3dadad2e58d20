//! The archive's HTTP routes (the archive itself is the `archive` stage):
//!
//! - `GET /archive/{id}/ranges`: the original's shape and codes, from real durations; a gap
//!   only where video is missing for more than `gap_tolerance_ms`.
//! - `GET /archive/{id}/segments?start&end`: every file with its real start, duration, size,
//!   location and end reason, and the gaps with their causes.
//! - `GET /archive/{id}/clip.mp4?start&end`: one MP4 for any window, starting at `start`, with
//!   `Content-Disposition`, `ETag` and `Range`.
//! - `GET /archive/{id}/playlist.m3u8?start&end`: an HLS VOD playlist over the files, with
//!   `PROGRAM-DATE-TIME` and discontinuities, and `GET /archive/{id}/files/{name}?part=init|media`
//!   for its init and media sections.
//!
//! Times in queries are Unix seconds (fractions allowed) or RFC 3339.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Local, SecondsFormat, TimeZone, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Ctx;
use crate::archive::clip::ClipPlan;
use crate::archive::index::{file_name, parse_file_name};
use crate::archive::{ArchiveError, StorageError, StreamArchive};
use crate::mp4::movie::top_level_boxes;
use crate::mp4::movie::Mp4Error;

/// Window query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct Window {
    pub start: Option<String>,
    pub end: Option<String>,
}

/// Parses a time: Unix seconds (fractions allowed) or RFC 3339; Unix ms out.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(s) = t.parse::<f64>() {
        return s.is_finite().then(|| (s * 1000.0).round() as i64);
    }
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp_millis())
}

fn window(w: &Window, required: bool) -> Result<(i64, i64), ArchiveError> {
    let get = |name: &str, v: &Option<String>, default: i64| match v {
        None if required => Err(ArchiveError::BadRequest(format!(
            "`{name}` is required (Unix seconds or RFC 3339)"
        ))),
        None => Ok(default),
        Some(t) => parse_time(t).ok_or_else(|| {
            ArchiveError::BadRequest(format!(
                "`{name}` = {t:?} is not a time (Unix seconds or RFC 3339)"
            ))
        }),
    };
    let start = get("start", &w.start, i64::MIN / 2)?;
    let end = get("end", &w.end, i64::MAX / 2)?;
    if end <= start {
        return Err(ArchiveError::BadRequest(
            "`end` must be after `start`".into(),
        ));
    }
    Ok((start, end))
}

/// RFC 3339 in the server's time zone, as the original writes times.
fn local_time(ms: i64) -> String {
    Local
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn utc_time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

async fn stream(ctx: &Ctx, id: &str) -> Result<Arc<StreamArchive>, ArchiveError> {
    let id =
        Uuid::parse_str(id).map_err(|_| ArchiveError::BadRequest("invalid stream_id".into()))?;
    ctx.archive
        .as_ref()
        .ok_or_else(|| ArchiveError::NotAvailable("archive serving not enabled globally".into()))?
        .resolve(&id)
        .await
}

/// `GET /archive/{id}/ranges`: the original's body and codes.
pub async fn ranges(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
) -> Result<Response, ArchiveError> {
    let sa = stream(&ctx, &id).await.map_err(|e| match e {
        ArchiveError::Storage(_) => ArchiveError::ListingFailed,
        e => e,
    })?;
    let tolerance = ctx
        .archive
        .as_ref()
        .map_or(500, |a| a.config().gap_tolerance_ms);
    let spans = sa.spans(tolerance);
    if spans.is_empty() {
        return Err(ArchiveError::NotFound("no archive segments found".into()));
    }
    let ranges: Vec<_> = spans
        .iter()
        .map(|s| json!({"start": local_time(s.start_ms), "end": local_time(s.end_ms)}))
        .collect();
    Ok(Json(json!({"stream_id": id, "ranges": ranges})).into_response())
}

/// `GET /archive/{id}/segments?start&end`.
pub async fn segments(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
    Query(w): Query<Window>,
) -> Result<Response, ArchiveError> {
    let sa = stream(&ctx, &id).await?;
    let (start, end) = window(&w, false)?;
    let tolerance = ctx
        .archive
        .as_ref()
        .map_or(500, |a| a.config().gap_tolerance_ms);
    let gaps = sa.with_index(|i| i.gaps(start, end, tolerance));
    let growing = sa.growing().map(|g| g.name_s);
    let segs: Vec<_> = sa
        .view(start, end)
        .iter()
        .map(|s| {
            json!({
                "growing": Some(s.name_s) == growing,
                "file": s.file_name(&sa.id),
                "start": utc_time(s.start_ms),
                "end": utc_time(s.end_ms()),
                "start_ms": s.start_ms,
                "duration_ms": s.duration_ms,
                "bytes": s.bytes,
                "location": s.location,
                "end_reason": s.end,
            })
        })
        .collect();
    let gaps: Vec<_> = gaps
        .iter()
        .map(|g| {
            json!({
                "start": utc_time(g.start_ms),
                "end": utc_time(g.end_ms),
                "duration_ms": g.end_ms - g.start_ms,
                "cause": g.cause,
            })
        })
        .collect();
    let status = sa.status.snapshot();
    Ok(Json(json!({
        "stream_id": sa.id,
        "segments": segs,
        "gaps": gaps,
        "recording": sa.recording,
        "recorder": status,
    }))
    .into_response())
}

/// `GET /archive/{id}/clip.mp4?start&end`.
pub async fn clip(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
    Query(w): Query<Window>,
    request: HeaderMap,
) -> Result<Response, ArchiveError> {
    let sa = stream(&ctx, &id).await?;
    let (start, end) = window(&w, true)?;
    let cfg = ctx
        .archive
        .as_ref()
        .map(|a| a.config().clone())
        .ok_or_else(|| ArchiveError::NotAvailable("no archive".into()))?;
    if end.saturating_sub(start) > cfg.max_clip_ms {
        return Err(ArchiveError::TooLarge(format!(
            "a clip may be at most {} s long (archive.max_clip_ms)",
            cfg.max_clip_ms / 1000
        )));
    }
    let segs = sa.with_index(|i| i.overlapping(start, end).to_vec());
    if segs.is_empty() {
        return Err(ArchiveError::NotFound("no recording in this window".into()));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (sa.id, start, end).hash(&mut hasher);
    for s in &segs {
        (s.name_s, s.bytes, s.duration_ms).hash(&mut hasher);
    }
    let etag = format!("\"{:016x}\"", hasher.finish());
    if request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let plan = Arc::new(ClipPlan::build(&sa, &segs, start, end, cfg.gap_tolerance_ms).await?);
    let filename = format!("{}_{}-{}.mp4", sa.id, start / 1000, end / 1000);
    let headers: Vec<(HeaderName, HeaderValue)> = [
        (header::CONTENT_TYPE, "video/mp4".to_owned()),
        (header::ETAG, etag),
        (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, HeaderValue::from_str(&v).ok()?)))
    .collect();
    let len = plan.size();
    Ok(crate::api::ranged::lazy_response(
        len,
        &request,
        &headers,
        |skip, n| axum::body::Body::new(super::ranged::Streamed::new(n, plan.bytes(sa, skip, n))),
    ))
}

/// `GET /archive/{id}/playlist.m3u8?start&end`: every file is one segment (its media section),
/// after its own `EXT-X-MAP` and a discontinuity (each file's timestamps start at zero).
pub async fn playlist(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
    Query(w): Query<Window>,
    token: Option<axum::Extension<crate::api::guard::QueryToken>>,
) -> Result<Response, ArchiveError> {
    let token = token.map_or_else(String::new, |axum::Extension(t)| {
        format!("&token={}", crate::api::guard::encode_query_value(&t.0))
    });
    let sa = stream(&ctx, &id).await?;
    let (start, end) = window(&w, false)?;
    let segs = sa.with_index(|i| i.overlapping(start, end).to_vec());
    if segs.is_empty() {
        return Err(ArchiveError::NotFound("no recording in this window".into()));
    }
    let target = segs
        .iter()
        .map(|s| (s.duration_ms + 999) / 1000)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut m3u8 = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n"
    );
    for (i, s) in segs.iter().enumerate() {
        let name = s.file_name(&sa.id);
        if i > 0 {
            m3u8.push_str("#EXT-X-DISCONTINUITY\n");
        }
        m3u8.push_str(&format!(
            "#EXT-X-MAP:URI=\"files/{name}?part=init{token}\"\n#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{:.3},\nfiles/{name}?part=media{token}\n",
            utc_time(s.start_ms),
            s.duration_ms as f64 / 1000.0
        ));
    }
    m3u8.push_str("#EXT-X-ENDLIST\n");
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        m3u8,
    )
        .into_response())
}

/// `?part=` of a file request.
#[derive(Debug, Default, Deserialize)]
pub struct Part {
    pub part: Option<String>,
}

/// `GET /archive/{id}/files/{name}[?part=init|media]`: a whole archive file, or its init
/// section (`ftyp`+`moov`), or its media section (the fragments).
pub async fn file(
    State(ctx): State<Arc<Ctx>>,
    Path((id, name)): Path<(String, String)>,
    Query(part): Query<Part>,
    request: HeaderMap,
) -> Result<Response, ArchiveError> {
    let sa = stream(&ctx, &id).await?;
    let name_s = parse_file_name(&sa.id, &name)
        .filter(|&n| file_name(&sa.id, n) == name)
        .ok_or_else(|| ArchiveError::NotFound(format!("{name} is not a file of this stream")))?;
    let seg = sa
        .segment(name_s)
        .ok_or_else(|| ArchiveError::NotFound(format!("no archive file {name}")))?;
    let bytes = sa.read(&seg).await?;
    let body = match part.part.as_deref() {
        None | Some("") => bytes,
        Some(p @ ("init" | "media")) => {
            let (boxes, _) = top_level_boxes(&bytes);
            let moov_end = boxes
                .iter()
                .find(|(k, _)| k == b"moov")
                .map(|(_, r)| r.end)
                .ok_or_else(|| {
                    ArchiveError::Storage(StorageError::Unreadable {
                        name: name.clone(),
                        source: Mp4Error::NoMoov,
                    })
                })?;
            if p == "init" {
                bytes.slice(..moov_end)
            } else {
                let media_end = boxes
                    .iter()
                    .filter(|(k, _)| k == b"mdat" || k == b"moof")
                    .map(|(_, r)| r.end)
                    .max()
                    .unwrap_or(moov_end);
                bytes.slice(moov_end..media_end.max(moov_end))
            }
        }
        Some(other) => {
            return Err(ArchiveError::BadRequest(format!(
                "part = {other:?}: expected `init` or `media`"
            )))
        }
    };
    Ok(crate::api::ranged::response(
        vec![body],
        &request,
        &[
            (header::CONTENT_TYPE, HeaderValue::from_static("video/mp4")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            ),
        ],
    ))
}

/// The body of `POST /archive/{id}/share`.
#[derive(Debug, Deserialize)]
pub struct ShareRequest {
    pub start: serde_json::Value,
    pub end: serde_json::Value,
    /// Seconds the link stays valid (default one day), or `expires` (Unix seconds).
    pub expires_in: Option<i64>,
    pub expires: Option<i64>,
}

fn json_time(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(|s| (s * 1000.0).round() as i64),
        serde_json::Value::String(s) => parse_time(s),
        _ => None,
    }
}

/// `POST /archive/{id}/share` (admin): a clip link for one window of one stream that works
/// without any other credential until it expires, and for nothing else.
pub async fn share(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ArchiveError> {
    let id =
        Uuid::parse_str(&id).map_err(|_| ArchiveError::BadRequest("invalid stream_id".into()))?;
    let req: ShareRequest = serde_json::from_slice(&body).map_err(|e| {
        ArchiveError::BadRequest(format!(
            "expected {{\"start\", \"end\", \"expires_in\"}}: {e}"
        ))
    })?;
    let (Some(start), Some(end)) = (json_time(&req.start), json_time(&req.end)) else {
        return Err(ArchiveError::BadRequest(
            "`start` and `end` must be Unix seconds or RFC 3339".into(),
        ));
    };
    let max_clip = ctx.archive.as_ref().map_or(0, |a| a.config().max_clip_ms);
    if end <= start || end.saturating_sub(start) > max_clip {
        return Err(ArchiveError::BadRequest(format!(
            "the window must be positive and at most {} s",
            max_clip / 1000
        )));
    }
    let now_s = crate::media::unix_ms_now() / 1000;
    let exp = req
        .expires
        .unwrap_or_else(|| now_s.saturating_add(req.expires_in.unwrap_or(86_400)));
    if exp <= now_s {
        return Err(ArchiveError::BadRequest("the expiry is in the past".into()));
    }
    let sig = ctx
        .authority
        .as_ref()
        .and_then(|a| a.sign_link(&id, start, end, exp))
        .ok_or_else(|| {
            ArchiveError::BadRequest(
                "signed links need [auth] enabled with a link_secret or jwt_secret".into(),
            )
        })?;
    let url = format!(
        "/archive/{id}/clip.mp4?start={}&end={}&exp={exp}&sig={sig}",
        format_seconds(start),
        format_seconds(end)
    );
    Ok(Json(json!({
        "url": url,
        "expires": utc_time(exp * 1000),
        "stream_id": id,
        "start": utc_time(start),
        "end": utc_time(end),
    }))
    .into_response())
}

/// Unix seconds with milliseconds, as `parse_time` reads them back exactly.
fn format_seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// `GET /archive/{id}/thumbnails?start&end` (ours): the recording's thumbnails in the window,
/// oldest first, each with its time and URL.
pub async fn thumbnails(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
    Query(w): Query<Window>,
) -> Result<Response, ArchiveError> {
    let sa = stream(&ctx, &id).await?;
    let (start, end) = window(&w, false)?;
    let here = ctx.archive.as_ref().is_some_and(|a| a.records_here(&sa.id));
    let list: Vec<_> = sa
        .thumbnails(start, end, here)
        .await
        .into_iter()
        .map(|ms| {
            json!({
                "time": utc_time(ms),
                "time_ms": ms,
                "url": format!("/archive/{}/thumbnails/{ms}.jpg", sa.id),
            })
        })
        .collect();
    Ok(Json(json!({ "stream_id": sa.id, "thumbnails": list })).into_response())
}

/// `GET /archive/{id}/thumbnails/{ms}.jpg` (ours): one thumbnail.
pub async fn thumbnail(
    State(ctx): State<Arc<Ctx>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ArchiveError> {
    let sa = stream(&ctx, &id).await?;
    let not_found = || ArchiveError::NotFound(format!("no thumbnail {name}"));
    let ms: i64 = name
        .strip_suffix(".jpg")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(not_found)?;
    let jpeg = sa.thumbnail(ms).await?.ok_or_else(not_found)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        jpeg,
    )
        .into_response())
}

//! WHEP (RFC 9725), the WebRTC playback handshake: `POST /whep/{id}` with an SDP offer gets
//! `201 Created`, the answer and a `Location` naming the session; `DELETE` on that location
//! ends it; `PATCH` (trickle ICE) is accepted and needs nothing, the gateway being ICE-lite
//! with every candidate in its answer.
//!
//! Belongs here: content types, the viewer's place under `[limits]`, finding the stream, the
//! response headers (`Link` for ICE servers, `X-Webrtc-Audio`). Does not belong here: SDP and
//! media (`webrtc`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use uuid::Uuid;

use super::error::ApiError;
use super::registry::Unavailable;
use super::server::{LocalAddr, ViewerKind, ViewerSlot};
use super::Ctx;
use crate::config::webrtc::IceServer;
use crate::webrtc::{Offer, WebrtcError};

/// Whether the request's body is of `mime` (parameters such as `charset` ignored).
fn is_type(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(mime))
}

fn stream_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| ApiError::BadRequest(format!("Not valid UUID: '{raw}'")))
}

/// `POST /whep/{id}`: an offer in, the answer out.
pub async fn offer(
    State(ctx): State<Arc<Ctx>>,
    Path(raw_id): Path<String>,
    local: Option<Extension<LocalAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match answer(&ctx, &raw_id, local.map(|l| l.0 .0.ip()), &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn answer(
    ctx: &Arc<Ctx>,
    raw_id: &str,
    local_ip: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !is_type(headers, "application/sdp") {
        return Err(ApiError::UnsupportedMediaType(
            "a WHEP offer is Content-Type: application/sdp".into(),
        ));
    }
    let id = stream_id(raw_id)?;
    let (hub, demand) = ctx.streams.webrtc(&id).map_err(|e| match e {
        Unavailable::NotFound => ApiError::NotFound(e.reason().into()),
        Unavailable::NoSuchOutput => ApiError::NotFound(format!(
            "{}: add \"webrtc\" to the stream's output_types",
            e.reason()
        )),
    })?;
    let slot = ViewerSlot::reserve_as(
        &ctx.server_stats,
        &ctx.config.limits,
        Some((&hub, ViewerKind::Webrtc)),
    )
    .map_err(|why| ApiError::Busy(why.into()))?;
    let sdp = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the offer is not UTF-8 text".into()))?;
    let answer = ctx
        .webrtc
        .answer(hub, (demand, slot), Offer { sdp, local_ip })
        .await?;
    let mut resp = (StatusCode::CREATED, answer.sdp).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/whep/{id}/{}", answer.session)) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&answer.audio) {
        h.insert("x-webrtc-audio", v);
    }
    for link in ice_links(ctx.webrtc.ice_servers()) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    Ok(resp)
}

/// `Link` header values for the configured STUN/TURN servers (RFC 9725 §4.6).
fn ice_links(servers: &[IceServer]) -> Vec<String> {
    let quote = |s: &str| s.replace(['"', '\\', '\r', '\n'], "");
    servers
        .iter()
        .flat_map(|s| {
            s.urls.iter().map(move |u| {
                let mut v = format!("<{}>; rel=\"ice-server\"", quote(u));
                if let (Some(user), Some(cred)) = (&s.username, &s.credential) {
                    v.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        quote(user),
                        quote(cred)
                    ));
                }
                v
            })
        })
        .collect()
}

/// `PATCH /whep/{id}/{session}`: trickled candidates. ICE-lite learns the browser's addresses
/// from its checks, so there is nothing to do but say the session exists.
pub async fn patch(
    State(ctx): State<Arc<Ctx>>,
    Path((raw_id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = stream_id(&raw_id)?;
    if !ctx.webrtc.exists(&id, &session) {
        return Err(WebrtcError::NoSession.into());
    }
    if !is_type(&headers, "application/trickle-ice-sdpfrag") {
        return Err(ApiError::UnsupportedMediaType(
            "trickle ICE is Content-Type: application/trickle-ice-sdpfrag".into(),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /whep/{id}/{session}`: ends the session.
pub async fn delete(
    State(ctx): State<Arc<Ctx>>,
    Path((raw_id, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = stream_id(&raw_id)?;
    ctx.webrtc.end(&id, &session)?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_links(&[
            IceServer {
                urls: vec!["stun:stun.example.net".into()],
                ..IceServer::default()
            },
            IceServer {
                urls: vec!["turn:turn.example.net?transport=udp".into()],
                username: Some("u".into()),
                credential: Some("p\"x".into()),
            },
        ]);
        assert_eq!(links[0], "<stun:stun.example.net>; rel=\"ice-server\"");
        assert_eq!(
            links[1],
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u\"; \
             credential=\"px\"; credential-type=\"password\""
        );
    }
}

//! Authentication on both servers (when `[auth] enabled`): the check each route group gets
//! ([`require`], attached by `api::mod` per action, so a route exists only inside a group and
//! none is open by omission), the stream a request is about ([`scope_of`], pure), what answers
//! routes nobody listed ([`unknown_route`]: a credential first), where credentials come from (`Authorization: Bearer`, or
//! `?token=` for browsers' websockets, players and links), signed clip links, and the
//! websocket `Origin` check. Refusals are 401 (no or bad credential) or 403 (not allowed), with
//! a JSON reason, and are logged with the remote address, never the credential.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;
use uuid::Uuid;

use super::error::ApiError;
use super::Ctx;
use crate::api::access::Grant;
use crate::config::auth::Action;

/// Which streams a request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One stream.
    One(Uuid),
    /// Any stream the credential covers (the handler shows only those).
    Any,
    /// Every stream (`*`).
    All,
}

/// A credential that arrived as `?token=`: HLS playlists pass it on to their media URIs.
#[derive(Clone, Debug)]
pub struct QueryToken(pub String);

/// The first value of `name` in a query string, decoded.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Encodes a value (a token) for a query string; [`query_param`] decodes it.
pub fn encode_query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The stream a request is about: its `stream_id` query parameter, else the first path segment
/// that starts with a stream id (`/streams/{id}`, `/archive/{id}/…`, `/ws/{id}`,
/// `/hls/{id}….m4s`). Without one, a route of the admin or metrics group is about every stream
/// (`/metrics` shows them all, so a credential scoped to some streams may not read it) and any
/// other about whichever streams the credential covers (the handler shows only those).
pub fn scope_of(action: Action, path: &str, query: &str) -> Scope {
    let id = query_param(query, "stream_id")
        .and_then(|v| Uuid::parse_str(&v).ok())
        .or_else(|| {
            path.split('/')
                .find_map(|seg| seg.get(..36).and_then(|s| Uuid::parse_str(s).ok()))
        });
    match (id, action) {
        (Some(id), _) => Scope::One(id),
        (None, Action::Admin | Action::Metrics) => Scope::All,
        (None, _) => Scope::Any,
    }
}

fn allowed(grant: &Grant, action: Action, scope: Scope) -> bool {
    match scope {
        Scope::One(id) => grant.allows(action, Some(&id)),
        Scope::All => grant.allows(action, None),
        Scope::Any => grant.actions.contains(&action),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A websocket's `Origin` must be the server's own host or allowed by `[cors]`.
fn origin_ok(ctx: &Ctx, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    if !host.is_empty() && origin_host == host {
        return true;
    }
    let cors = &ctx.config.cors;
    cors.enabled
        && cors
            .allow_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin.trim_end_matches('/'))
}

/// The check every route of a group gets (`api::mod` attaches it per action): with `[auth]`
/// on, a request needs a credential that allows `action` on the stream it is about.
pub async fn require(
    State((ctx, action)): State<(Arc<Ctx>, Action)>,
    req: Request,
    next: Next,
) -> Response {
    if ctx.authority.as_ref().is_none() || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let scope = scope_of(action, req.uri().path(), req.uri().query().unwrap_or(""));
    match check(&ctx, Some((action, scope)), req) {
        Ok(req) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

/// Routes nobody listed (and wrong methods): with `[auth]` on, a credential first, then the
/// original's 404; without one, 401. Nothing answers unauthenticated by omission.
pub async fn unknown_route(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    if ctx.authority.as_ref().is_some() && req.method() != Method::OPTIONS {
        if let Err(refused) = check(&ctx, None, req) {
            return refused.into_response();
        }
    }
    super::error::not_found().await
}

/// Authenticates `req` and, with `need`, authorizes it for that action and scope; the request
/// comes back with its grant, or the refusal to send.
fn check(ctx: &Ctx, need: Option<(Action, Scope)>, mut req: Request) -> Result<Request, ApiError> {
    let Some(authority) = ctx.authority.as_ref() else {
        return Ok(req);
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "?".to_owned(), |c| c.0.to_string());
    let now_s = crate::media::unix_ms_now() / 1000;
    let is_ws = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_ws && !origin_ok(ctx, req.headers()) {
        warn!(%remote, %path, "refused: websocket Origin not allowed");
        return Err(ApiError::Forbidden("origin not allowed".into()));
    }
    // A signed clip link stands in for a token, for its stream and window only.
    let signed = match (need, query_param(&query, "sig"), query_param(&query, "exp")) {
        (Some((Action::Archive, Scope::One(id))), Some(sig), Some(exp))
            if path.ends_with("/clip.mp4") =>
        {
            let t = |k| query_param(&query, k).and_then(|v| crate::api::archive::parse_time(&v));
            Some(match (t("start"), t("end"), exp.parse::<i64>()) {
                (Some(s), Some(e), Ok(exp)) => authority.check_link(&id, s, e, exp, &sig, now_s),
                _ => Err(crate::api::access::Refused::Malformed),
            })
        }
        _ => None,
    };
    let from_query = query_param(&query, "token");
    let result = match signed {
        Some(r) => r,
        None => match bearer(req.headers())
            .map(str::to_owned)
            .or(from_query.clone())
        {
            Some(credential) => authority.check(&credential, now_s),
            None => {
                warn!(%remote, %path, "refused: no credential");
                return Err(ApiError::Unauthorized("a token is required".into()));
            }
        },
    };
    let grant = match result {
        Ok(g) => g,
        Err(e) => {
            warn!(%remote, %path, "refused: {e}");
            return Err(ApiError::Unauthorized(e.to_string()));
        }
    };
    if let Some((action, scope)) = need {
        if !allowed(&grant, action, scope) {
            warn!(%remote, %path, who = %grant.who, ?action, "refused: not allowed");
            return Err(ApiError::Forbidden(
                "not allowed for this stream or action".into(),
            ));
        }
    }
    if let Some(t) = from_query {
        req.extensions_mut().insert(QueryToken(t));
    }
    req.extensions_mut().insert(grant);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0742091c-19cd-4658-9b4f-5320da160f45";

    #[test]
    fn requests_are_about_the_stream_they_name() {
        let id = Uuid::parse_str(A).expect("uuid");
        let one = Scope::One(id);
        assert_eq!(
            scope_of(Action::Live, "/ws/live", &format!("stream_id={A}")),
            one
        );
        assert_eq!(scope_of(Action::Live, &format!("/ws/{A}"), ""), one);
        assert_eq!(
            scope_of(Action::Live, &format!("/hls/{A}0003.m4s"), "v=x"),
            one
        );
        assert_eq!(
            scope_of(Action::Archive, &format!("/archive/{A}/clip.mp4"), ""),
            one
        );
        assert_eq!(
            scope_of(Action::Admin, &format!("/archive/{A}/share"), ""),
            one
        );
        assert_eq!(scope_of(Action::Admin, "/status", ""), Scope::All);
        assert_eq!(scope_of(Action::Live, "/streams", ""), Scope::Any);
        assert_eq!(scope_of(Action::Metrics, "/metrics", ""), Scope::All);
        // Not a stream id: no stream named.
        assert_eq!(
            scope_of(Action::Archive, "/archive/not-an-id/ranges", "stream_id=x"),
            Scope::Any
        );
        assert_eq!(scope_of(Action::Live, "/hls/é", ""), Scope::Any);
    }

    #[test]
    fn tokens_survive_query_encoding() {
        let t = "a b/c+d=e%f";
        let query = format!("x=1&token={}", encode_query_value(t));
        assert_eq!(query_param(&query, "token").as_deref(), Some(t));
        assert_eq!(query_param("token=abc", "token").as_deref(), Some("abc"));
        assert_eq!(query_param("token=abc", "sig"), None);
    }
}

//! Authentication on both servers (when `[auth] enabled`): which route needs which action on
//! which stream ([`need`], pure), where credentials come from (`Authorization: Bearer`, or
//! `?token=` for browsers' websockets, players and links), signed clip links, and the
//! websocket `Origin` check. Refusals are 401 (no or bad credential) or 403 (not allowed), with
//! a JSON reason, and are logged with the remote address, never the credential.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::warn;
use uuid::Uuid;

use crate::app::App;
use crate::auth::Grant;
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

/// What a request needs; `None` for public routes.
pub type Need = Option<(Action, Scope)>;

/// A credential that arrived as `?token=`: HLS playlists pass it on to their media URIs.
#[derive(Clone, Debug)]
pub struct QueryToken(pub String);

/// The first value of `name` in a query string, decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Encodes a value (a token) for a query string; [`query_param`] decodes it.
pub fn encode_query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The action and streams a route needs.
pub fn need(method: &Method, path: &str, query: &str) -> Need {
    if method == Method::OPTIONS {
        return None; // CORS preflight
    }
    let one_or_any = |id: Option<Uuid>| id.map_or(Scope::Any, Scope::One);
    let stream_id = || query_param(query, "stream_id").and_then(|v| Uuid::parse_str(&v).ok());
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["health"] | ["favicon.ico"] | ["openapi.json"] => None,
        // Scripts of the players carry no data; the pages do (through their requests).
        ["players", _, file] if !file.is_empty() => None,
        ["players", _, ""] | ["players", _] => Some((Action::Live, one_or_any(stream_id()))),
        [""] | ["streams"] => Some((Action::Live, Scope::Any)),
        ["streams", id] => Some((Action::Live, one_or_any(Uuid::parse_str(id).ok()))),
        ["ws", "archive"] => Some((Action::Archive, one_or_any(stream_id()))),
        ["ws", seg] => {
            let id = stream_id().or_else(|| Uuid::parse_str(seg).ok());
            Some((Action::Live, one_or_any(id)))
        }
        ["hls", file] => {
            let id = crate::hls::http::parse_name(file).ok().map(|(id, _)| id);
            Some((Action::Live, one_or_any(id)))
        }
        ["archive", id, "share"] => Some((Action::Admin, one_or_any(Uuid::parse_str(id).ok()))),
        ["archive", id, ..] => Some((Action::Archive, one_or_any(Uuid::parse_str(id).ok()))),
        ["metrics"] => Some((Action::Metrics, Scope::Any)),
        ["list"] | ["status"] | ["enable_camera"] | ["disable_camera"] | ["config", "reload"] => {
            Some((Action::Admin, Scope::All))
        }
        // Unknown routes answer 404 whoever asks.
        _ => None,
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

fn refuse(status: StatusCode, reason: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": reason }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// A websocket's `Origin` must be the server's own host or allowed by `[cors]`.
fn origin_ok(app: &App, headers: &HeaderMap) -> bool {
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
    let cors = &app.config.cors;
    cors.enabled
        && cors
            .allow_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin.trim_end_matches('/'))
}

/// The middleware.
pub async fn layer(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let Some(authority) = app.authority() else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let Some((action, scope)) = need(req.method(), &path, &query) else {
        return next.run(req).await;
    };
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "?".to_owned(), |c| c.0.to_string());
    let now_s = crate::media::unix_ms_now() / 1000;
    let is_ws = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_ws && !origin_ok(&app, req.headers()) {
        warn!(%remote, %path, "refused: websocket Origin not allowed");
        return refuse(StatusCode::FORBIDDEN, "origin not allowed");
    }
    // A signed clip link stands in for a token, for its stream and window only.
    let signed = match (
        scope,
        query_param(&query, "sig"),
        query_param(&query, "exp"),
    ) {
        (Scope::One(id), Some(sig), Some(exp)) if path.ends_with("/clip.mp4") => {
            let t = |k| query_param(&query, k).and_then(|v| crate::archive::http::parse_time(&v));
            Some(match (t("start"), t("end"), exp.parse::<i64>()) {
                (Some(s), Some(e), Ok(exp)) => authority.check_link(&id, s, e, exp, &sig, now_s),
                _ => Err(crate::auth::Refused::Malformed),
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
                return refuse(StatusCode::UNAUTHORIZED, "a token is required");
            }
        },
    };
    let grant = match result {
        Ok(g) => g,
        Err(e) => {
            warn!(%remote, %path, "refused: {e}");
            return refuse(StatusCode::UNAUTHORIZED, &e.to_string());
        }
    };
    if !allowed(&grant, action, scope) {
        warn!(%remote, %path, who = %grant.who, ?action, "refused: not allowed");
        return refuse(
            StatusCode::FORBIDDEN,
            "not allowed for this stream or action",
        );
    }
    if let Some(t) = from_query {
        req.extensions_mut().insert(QueryToken(t));
    }
    req.extensions_mut().insert(grant);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0742091c-19cd-4658-9b4f-5320da160f45";

    #[test]
    fn routes_need_their_action_on_their_stream() {
        let id = Uuid::parse_str(A).expect("uuid");
        let get = |p: &str, q: &str| need(&Method::GET, p, q);
        assert_eq!(get("/health", ""), None);
        assert_eq!(get("/players/hls/player.js", ""), None);
        assert_eq!(get("/", ""), Some((Action::Live, Scope::Any)));
        assert_eq!(
            get("/ws/live", &format!("stream_id={A}")),
            Some((Action::Live, Scope::One(id)))
        );
        assert_eq!(
            get(&format!("/ws/{A}"), ""),
            Some((Action::Live, Scope::One(id)))
        );
        assert_eq!(
            get(&format!("/hls/{A}0003.m4s"), "v=x"),
            Some((Action::Live, Scope::One(id)))
        );
        assert_eq!(
            get("/ws/archive", &format!("stream_id={A}&start=1")),
            Some((Action::Archive, Scope::One(id)))
        );
        assert_eq!(
            get(&format!("/archive/{A}/clip.mp4"), ""),
            Some((Action::Archive, Scope::One(id)))
        );
        assert_eq!(
            get(&format!("/archive/{A}/share"), ""),
            Some((Action::Admin, Scope::One(id)))
        );
        assert_eq!(get("/status", ""), Some((Action::Admin, Scope::All)));
        assert_eq!(get("/metrics", ""), Some((Action::Metrics, Scope::Any)));
        assert_eq!(get("/nope", ""), None);
        assert_eq!(need(&Method::OPTIONS, "/status", ""), None);
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

//! The websocket handshake (RFC 6455 §4.2): checks an HTTP/1.1 upgrade request, answers `101` with `Sec-WebSocket-Accept`, and hands the upgraded connection to the
//! session.
//!
//! Belongs here: the handshake. Does not belong here: the frames (`frame`, `socket`), which
//! routes upgrade and what they send (`api::live`).

use std::future::Future;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tracing::debug;

/// The connection a session gets after the handshake.
pub type Io = TokioIo<hyper::upgrade::Upgraded>;

/// The RFC's fixed GUID appended to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request cannot become a websocket; `api` maps it to a status with a JSON reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A websocket request with something wrong in it: 400.
    #[error("Not a websocket request: {0}")]
    Invalid(&'static str),
    /// A plain HTTP request (no `Upgrade: websocket`), or one on a connection that cannot be
    /// upgraded (HTTP/2): 426.
    #[error("Upgrade required: this route is a websocket ({0})")]
    UpgradeRequired(&'static str),
}

/// An accepted handshake, not yet answered.
#[derive(Debug)]
pub struct Upgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The checks of §4.2.1, on the request's head.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, HandshakeError> {
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeError::UpgradeRequired("no Upgrade: websocket"));
    }
    if method != Method::GET {
        return Err(HandshakeError::Invalid("the method must be GET"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::Invalid(
            "Connection does not include upgrade",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::Invalid("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or(HandshakeError::Invalid("Sec-WebSocket-Key is missing"))?;
    HeaderValue::from_str(&accept_key(key.as_bytes()))
        .map_err(|_| HandshakeError::Invalid("Sec-WebSocket-Key is unusable"))
}

impl Upgrade {
    /// Checks the request and takes its upgrade handle.
    pub fn new<B>(req: &mut Request<B>) -> Result<Upgrade, HandshakeError> {
        let accept = check(req.method(), req.headers())?;
        let on_upgrade =
            req.extensions_mut()
                .remove::<OnUpgrade>()
                .ok_or(HandshakeError::UpgradeRequired(
                    "this connection cannot be upgraded",
                ))?;
        Ok(Upgrade { accept, on_upgrade })
    }

    /// Answers `101` and runs `session` on the connection once the client has it.
    pub fn on_upgrade<F, Fut>(self, session: F) -> Response
    where
        F: FnOnce(Io) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(io) => session(TokioIo::new(io)).await,
                Err(e) => debug!(error = %e, "websocket upgrade failed"),
            }
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::SEC_WEBSOCKET_ACCEPT, self.accept),
            ],
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn the_rfc_example_key_is_accepted() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let ok = request(&[
            (header::CONNECTION, "keep-alive, Upgrade"),
            (header::UPGRADE, "WebSocket"),
            (header::SEC_WEBSOCKET_VERSION, "13"),
            (header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(
            check(&Method::GET, &ok).expect("valid"),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn each_missing_piece_is_named() {
        let full = [
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, "websocket"),
            (header::SEC_WEBSOCKET_VERSION, "13"),
            (header::SEC_WEBSOCKET_KEY, "x3JJHMbDL1EzLkh9GBhXDw=="),
        ];
        assert!(matches!(
            check(&Method::GET, &request(&full[2..])),
            Err(HandshakeError::UpgradeRequired(_))
        ));
        assert!(matches!(
            check(&Method::POST, &request(&full)),
            Err(HandshakeError::Invalid(_))
        ));
        for skip in [0, 2, 3] {
            let partial: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| p.clone())
                .collect();
            assert!(
                matches!(
                    check(&Method::GET, &request(&partial)),
                    Err(HandshakeError::Invalid(_))
                ),
                "without header {skip}"
            );
        }
        let mut v8 = full.to_vec();
        v8[2].1 = "8";
        assert_eq!(
            check(&Method::GET, &request(&v8)),
            Err(HandshakeError::Invalid("Sec-WebSocket-Version must be 13"))
        );
    }
}

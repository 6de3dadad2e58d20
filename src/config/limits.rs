//! `[limits]` (ours): how much one gateway lets its clients take, so that a flood of
//! connections, viewers, huge headers or slow clients costs a bounded amount and gets a clear
//! refusal. Every key is optional; the defaults leave room for a thousand viewers of one camera.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawLimits {
    pub max_connections: Option<u64>,
    pub max_viewers: Option<u64>,
    pub max_viewers_per_stream: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub header_timeout_ms: Option<u64>,
}

/// `[limits]` resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LimitsConfig {
    /// Open TCP connections per server (video, API); one more gets a 503 and is closed.
    pub max_connections: usize,
    /// Live websocket viewers (`/ws/live`, `/ws/archive`) in all; one more gets a 503.
    pub max_viewers: usize,
    /// Live websocket viewers of one stream; one more gets a 503.
    pub max_viewers_per_stream: usize,
    /// A request's line and headers, bytes; more gets a 431 (HTTP/1) or a reset (HTTP/2).
    pub max_header_bytes: usize,
    /// A request body (the API's JSON), bytes; more gets a 413.
    pub max_body_bytes: usize,
    /// A client that has not sent a complete request head within this is disconnected
    /// (slowloris), from the connection's start and between keep-alive requests.
    #[serde(serialize_with = "as_ms")]
    pub header_timeout: Duration,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            max_viewers: 3000,
            max_viewers_per_stream: 1500,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Resolves `[limits]`; an error is (key, message).
pub fn resolve(raw: RawLimits) -> Result<LimitsConfig, (String, String)> {
    let d = LimitsConfig::default();
    let pick = |v: Option<u64>, key: &str, min: u64, default: usize| match v {
        None => Ok(default),
        Some(n) if n >= min => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => Err((
            format!("limits.{key}"),
            format!("{n} is too small (at least {min})"),
        )),
    };
    Ok(LimitsConfig {
        max_connections: pick(raw.max_connections, "max_connections", 1, d.max_connections)?,
        max_viewers: pick(raw.max_viewers, "max_viewers", 1, d.max_viewers)?,
        max_viewers_per_stream: pick(
            raw.max_viewers_per_stream,
            "max_viewers_per_stream",
            1,
            d.max_viewers_per_stream,
        )?,
        max_header_bytes: pick(
            raw.max_header_bytes,
            "max_header_bytes",
            1024,
            d.max_header_bytes,
        )?,
        max_body_bytes: pick(raw.max_body_bytes, "max_body_bytes", 1024, d.max_body_bytes)?,
        header_timeout: Duration::from_millis(pick(
            raw.header_timeout_ms,
            "header_timeout_ms",
            100,
            d.header_timeout.as_millis() as usize,
        )? as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            resolve(RawLimits::default()).expect("defaults"),
            LimitsConfig::default()
        );
        let raw = RawLimits {
            max_viewers_per_stream: Some(2),
            header_timeout_ms: Some(500),
            ..RawLimits::default()
        };
        let l = resolve(raw).expect("valid");
        assert_eq!(l.max_viewers_per_stream, 2);
        assert_eq!(l.header_timeout, Duration::from_millis(500));
        let raw = RawLimits {
            max_header_bytes: Some(10),
            ..RawLimits::default()
        };
        let (key, msg) = resolve(raw).expect_err("too small");
        assert_eq!(key, "limits.max_header_bytes");
        assert!(msg.contains("at least 1024"), "{msg}");
    }
}

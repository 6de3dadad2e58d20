//! `[webrtc]` (ours): where the WHEP output listens and what it tells browsers. Streams opt in
//! with `webrtc` in `output_types`; this section only says how. Every key is optional.
//!
//! ```toml
//! [webrtc]
//! listen = "0.0.0.0:8189"          # one UDP port for every WebRTC viewer (ICE muxed)
//! advertise = ["203.0.113.7", "cams.example.com:443"]  # addresses behind NAT / port forwards
//! host_candidates = true           # also offer the address the browser reached us on
//! ice_tcp = true                   # also ICE over TCP on the same port number (UDP blocked)
//! [[webrtc.ice_servers]]           # handed to players (the WHEP answer's Link headers)
//! urls = ["stun:stun.example.com:3478"]
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[webrtc]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawWebrtc {
    pub listen: Option<String>,
    pub advertise: Vec<String>,
    pub host_candidates: Option<bool>,
    pub ice_tcp: Option<bool>,
    pub ice_servers: Vec<IceServer>,
}

/// A STUN or TURN server for players to use (WHEP `Link: <url>; rel="ice-server"`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    /// Never shown by the API (see `Serialize` of [`WebrtcConfig`]).
    #[serde(skip_serializing)]
    pub credential: Option<String>,
}

/// One address to advertise: an IP or host name, with the port if it differs from the
/// listening one (a port forward).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Advertised {
    pub host: String,
    pub port: Option<u16>,
}

/// `[webrtc]` resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebrtcConfig {
    /// The one UDP socket every session shares.
    pub listen: SocketAddr,
    /// More addresses to offer (a public address in front of NAT, a port forward). ICE-lite
    /// offers them as host candidates on the listening socket.
    pub advertise: Vec<Advertised>,
    /// Offer the local address the browser's request arrived on (off: only `advertise`).
    pub host_candidates: bool,
    /// Also accept ICE over TCP (passive candidates, RFC 4571 framing) on `listen`'s port
    /// number, for browsers behind firewalls that drop UDP.
    pub ice_tcp: bool,
    pub ice_servers: Vec<IceServer>,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8189)),
            advertise: Vec::new(),
            host_candidates: true,
            ice_tcp: false,
            ice_servers: Vec::new(),
        }
    }
}

/// Resolves `[webrtc]`; an error is (key, message).
pub fn resolve(raw: RawWebrtc) -> Result<WebrtcConfig, (String, String)> {
    let d = WebrtcConfig::default();
    let listen = match raw.listen.as_deref().map(str::trim) {
        None | Some("") => d.listen,
        Some(s) => s.parse().map_err(|_| {
            (
                "webrtc.listen".to_owned(),
                format!("'{s}' is not an address with a port (e.g. \"0.0.0.0:8189\")"),
            )
        })?,
    };
    let advertise = raw
        .advertise
        .iter()
        .map(|a| parse_advertised(a).map_err(|m| ("webrtc.advertise".to_owned(), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let host_candidates = raw.host_candidates.unwrap_or(true);
    if !host_candidates && advertise.is_empty() {
        return Err((
            "webrtc.host_candidates".into(),
            "false leaves no address to offer: list one in `advertise`".into(),
        ));
    }
    for s in &raw.ice_servers {
        let ok = !s.urls.is_empty()
            && s.urls.iter().all(|u| {
                ["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|p| u.starts_with(p))
            });
        if !ok {
            return Err((
                "webrtc.ice_servers".into(),
                format!(
                    "urls {:?} must be stun:, stuns:, turn: or turns: URLs",
                    s.urls
                ),
            ));
        }
    }
    Ok(WebrtcConfig {
        listen,
        advertise,
        host_candidates,
        ice_tcp: raw.ice_tcp.unwrap_or(false),
        ice_servers: raw.ice_servers,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_advertised(s: &str) -> Result<Advertised, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a host or host:port");
    if s.is_empty() || s.contains('/') || s.contains(' ') {
        return Err(bad());
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(Advertised {
            host: ip.to_string(),
            port: None,
        });
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(Advertised {
            host: sa.ip().to_string(),
            port: Some(sa.port()),
        });
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok(Advertised {
            host: host.to_owned(),
            port: Some(port.parse().map_err(|_| bad())?),
        }),
        Some(_) => Err(bad()),
        None => Ok(Advertised {
            host: s.to_owned(),
            port: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_forms() {
        let p = |s| parse_advertised(s).expect("parses");
        assert_eq!(p("203.0.113.7").port, None);
        assert_eq!(p("203.0.113.7:443").port, Some(443));
        assert_eq!(p("cams.example.com").host, "cams.example.com");
        assert_eq!(p("cams.example.com:9").port, Some(9));
        assert_eq!(p("[2001:db8::1]:5").host, "2001:db8::1");
        assert_eq!(p("2001:db8::1").port, None);
        assert!(parse_advertised("a:b").is_err());
        assert!(parse_advertised("").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let raw = RawWebrtc {
            listen: Some("8189".into()),
            ..RawWebrtc::default()
        };
        assert_eq!(resolve(raw).expect_err("refused").0, "webrtc.listen");
        let raw = RawWebrtc {
            host_candidates: Some(false),
            ..RawWebrtc::default()
        };
        assert_eq!(
            resolve(raw).expect_err("refused").0,
            "webrtc.host_candidates"
        );
        let raw = RawWebrtc {
            ice_servers: vec![IceServer {
                urls: vec!["http://x".into()],
                ..IceServer::default()
            }],
            ..RawWebrtc::default()
        };
        assert_eq!(resolve(raw).expect_err("refused").0, "webrtc.ice_servers");
    }
}

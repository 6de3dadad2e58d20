//! Credentials: static bearer tokens, HS256 JWTs and signed archive links. Pure: a credential
//! and the current time in, a grant (which streams, which actions) or a reason out. The HTTP
//! side (where tokens come from, which route needs what) is `api::guard`.
//!
//! - Static tokens are compared as SHA-256 digests in constant time, so neither their length
//!   nor their prefix leaks through timing.
//! - JWTs must be HS256 (anything else, `none` included, is refused), unexpired, and carry
//!   `streams` (`["*"]` or UUIDs) and `actions` (`live`, `archive`, `admin`, `metrics`).
//! - A signed link is an HMAC-SHA256 over (stream, start, end, expiry): verifiable without
//!   server state, valid for one stream's clip of one window until it expires.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::auth::{parse_actions, parse_streams, Action, AuthConfig, Streams};

type HmacSha256 = Hmac<Sha256>;

/// What a credential allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub streams: Streams,
    pub actions: Vec<Action>,
    /// Who it is, for logs: `token #N`, the JWT's `sub`, or `signed link`.
    pub who: String,
}

impl Grant {
    pub fn allows(&self, action: Action, stream: Option<&Uuid>) -> bool {
        self.actions.contains(&action) && self.streams.covers(stream)
    }
}

/// Why a credential was refused (never containing the credential).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("unknown token")]
    Unknown,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm (only HS256)")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYet,
    #[error("bad token claims: {0}")]
    Claims(String),
}

/// The checker, built once from `[auth]`.
pub struct Authority {
    tokens: Vec<([u8; 32], Grant)>,
    jwt_secret: Vec<u8>,
    link_secret: Vec<u8>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equal without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    streams: Vec<String>,
    #[serde(default)]
    actions: Vec<String>,
}

impl Authority {
    pub fn new(cfg: &AuthConfig) -> Authority {
        Authority {
            tokens: cfg
                .tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        digest(&t.token),
                        Grant {
                            streams: t.streams.clone(),
                            actions: t.actions.clone(),
                            who: format!("token #{i}"),
                        },
                    )
                })
                .collect(),
            jwt_secret: cfg.jwt_secret.as_bytes().to_vec(),
            link_secret: cfg.link_secret.as_bytes().to_vec(),
        }
    }

    /// Checks a bearer credential (a static token or a JWT) at `now_s` (Unix seconds).
    pub fn check(&self, credential: &str, now_s: i64) -> Result<Grant, Refused> {
        let d = digest(credential);
        // Compare against every token, so the time does not say which one matched.
        let mut found = None;
        for (t, grant) in &self.tokens {
            if ct_eq(t, &d) {
                found = Some(grant);
            }
        }
        if let Some(g) = found {
            return Ok(g.clone());
        }
        if credential.matches('.').count() == 2 && !self.jwt_secret.is_empty() {
            return self.check_jwt(credential, now_s);
        }
        Err(Refused::Unknown)
    }

    fn check_jwt(&self, jwt: &str, now_s: i64) -> Result<Grant, Refused> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Refused::Malformed);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Refused::Malformed)?;
        if header.alg != "HS256" {
            return Err(Refused::Algorithm);
        }
        let sig = B64.decode(sig).map_err(|_| Refused::Malformed)?;
        let mut mac =
            HmacSha256::new_from_slice(&self.jwt_secret).map_err(|_| Refused::Signature)?;
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        // Constant-time comparison inside `verify_slice`.
        mac.verify_slice(&sig).map_err(|_| Refused::Signature)?;
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Refused::Malformed)?;
        match claims.exp {
            None => return Err(Refused::Claims("`exp` is required".into())),
            Some(exp) if exp <= now_s => return Err(Refused::Expired),
            Some(_) => {}
        }
        if claims.nbf.is_some_and(|nbf| nbf > now_s) {
            return Err(Refused::NotYet);
        }
        if claims.streams.is_empty() || claims.actions.is_empty() {
            return Err(Refused::Claims(
                "`streams` and `actions` are required".into(),
            ));
        }
        Ok(Grant {
            streams: parse_streams(&claims.streams).map_err(Refused::Claims)?,
            actions: parse_actions(&claims.actions).map_err(Refused::Claims)?,
            who: claims
                .sub
                .map_or_else(|| "jwt".to_owned(), |s| format!("jwt sub={s}")),
        })
    }

    fn link_mac(
        &self,
        stream: &Uuid,
        start_ms: i64,
        end_ms: i64,
        exp_s: i64,
    ) -> Option<HmacSha256> {
        if self.link_secret.is_empty() {
            return None;
        }
        let mut mac = HmacSha256::new_from_slice(&self.link_secret).ok()?;
        mac.update(format!("clip|{stream}|{start_ms}|{end_ms}|{exp_s}").as_bytes());
        Some(mac)
    }

    /// The signature of a clip link, or `None` without a link secret.
    pub fn sign_link(
        &self,
        stream: &Uuid,
        start_ms: i64,
        end_ms: i64,
        exp_s: i64,
    ) -> Option<String> {
        let mac = self.link_mac(stream, start_ms, end_ms, exp_s)?;
        Some(B64.encode(mac.finalize().into_bytes()))
    }

    /// Checks a clip link's signature and expiry.
    pub fn check_link(
        &self,
        stream: &Uuid,
        start_ms: i64,
        end_ms: i64,
        exp_s: i64,
        sig: &str,
        now_s: i64,
    ) -> Result<Grant, Refused> {
        let mac = self
            .link_mac(stream, start_ms, end_ms, exp_s)
            .ok_or(Refused::Signature)?;
        let sig = B64.decode(sig).map_err(|_| Refused::Malformed)?;
        mac.verify_slice(&sig).map_err(|_| Refused::Signature)?;
        if exp_s <= now_s {
            return Err(Refused::Expired);
        }
        Ok(Grant {
            streams: Streams::Some(vec![*stream]),
            actions: vec![Action::Archive],
            who: "signed link".into(),
        })
    }
}

/// Makes an HS256 JWT (for tests and tools; the gateway only verifies them).
pub fn make_jwt(secret: &str, claims: &serde_json::Value) -> String {
    let h = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = B64.encode(claims.to_string().as_bytes());
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{h}.{p}").as_bytes());
    let s = B64.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{s}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::StaticToken;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn authority() -> Authority {
        Authority::new(&AuthConfig {
            enabled: true,
            tokens: vec![StaticToken {
                token: "static-token-for-a-only".into(),
                streams: Streams::Some(vec![Uuid::from_u128(0xA)]),
                actions: vec![Action::Live],
            }],
            jwt_secret: SECRET.into(),
            link_secret: SECRET.into(),
        })
    }

    #[test]
    fn static_tokens_grant_their_scope_only() {
        let a = authority();
        let g = a.check("static-token-for-a-only", 0).expect("grant");
        assert!(g.allows(Action::Live, Some(&Uuid::from_u128(0xA))));
        assert!(!g.allows(Action::Live, Some(&Uuid::from_u128(0xB))));
        assert!(!g.allows(Action::Archive, Some(&Uuid::from_u128(0xA))));
        assert!(!g.allows(Action::Live, None));
        assert_eq!(a.check("static-token-for-a-onlX", 0), Err(Refused::Unknown));
    }

    #[test]
    fn jwts_are_checked_for_signature_algorithm_expiry_and_claims() {
        let a = authority();
        let claims =
            json!({"sub": "ops", "exp": 1000, "streams": ["*"], "actions": ["archive", "metrics"]});
        let jwt = make_jwt(SECRET, &claims);
        let g = a.check(&jwt, 999).expect("valid");
        assert!(g.allows(Action::Metrics, None) && g.allows(Action::Archive, Some(&Uuid::nil())));
        assert!(!g.allows(Action::Admin, None));
        assert_eq!(g.who, "jwt sub=ops");
        assert_eq!(a.check(&jwt, 1000), Err(Refused::Expired));
        assert_eq!(
            a.check(&make_jwt("another-secret-another-secret-xx", &claims), 0),
            Err(Refused::Signature)
        );
        // alg=none with the same claims and no signature.
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none"}"#),
            B64.encode(claims.to_string())
        );
        assert_eq!(a.check(&none, 0), Err(Refused::Algorithm));
        let no_scope = make_jwt(SECRET, &json!({"exp": 5000}));
        assert!(matches!(a.check(&no_scope, 0), Err(Refused::Claims(_))));
        assert_eq!(a.check("a.b.c", 0), Err(Refused::Malformed));
    }

    #[test]
    fn signed_links_hold_for_their_stream_window_and_time_only() {
        let a = authority();
        let id = Uuid::from_u128(7);
        let sig = a.sign_link(&id, 1000, 2000, 50).expect("signed");
        assert!(a.check_link(&id, 1000, 2000, 50, &sig, 49).is_ok());
        assert_eq!(
            a.check_link(&id, 1000, 2000, 50, &sig, 50),
            Err(Refused::Expired)
        );
        assert_eq!(
            a.check_link(&id, 1000, 2001, 50, &sig, 0),
            Err(Refused::Signature)
        );
        assert_eq!(
            a.check_link(&id, 1000, 2000, 51, &sig, 0),
            Err(Refused::Signature)
        );
        assert_eq!(
            a.check_link(&Uuid::from_u128(8), 1000, 2000, 50, &sig, 0),
            Err(Refused::Signature)
        );
        let g = a.check_link(&id, 1000, 2000, 50, &sig, 0).expect("grant");
        assert!(g.allows(Action::Archive, Some(&id)) && !g.allows(Action::Live, Some(&id)));
    }
}

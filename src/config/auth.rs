//! `[auth]` (ours): static bearer tokens and/or HS256 JWTs, each scoped to streams and
//! actions, and the secret of signed archive links. Off by default, so the original's
//! configurations keep working.

use serde::Serialize;
use uuid::Uuid;

use super::raw::RawAuth;

/// What a credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Watch live video (MSE, HLS, the dashboard) and see the stream's details.
    Live,
    /// Ranges, clips, playlists and playback of the archive.
    Archive,
    /// The original's API (`/list`, `/status`, enable/disable) and signed links.
    Admin,
    /// `/metrics`.
    Metrics,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s.trim().to_ascii_lowercase().as_str() {
            "live" => Some(Action::Live),
            "archive" => Some(Action::Archive),
            "admin" => Some(Action::Admin),
            "metrics" => Some(Action::Metrics),
            _ => None,
        }
    }
}

/// Which streams a credential covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Streams {
    All,
    Some(Vec<Uuid>),
}

impl Streams {
    pub fn covers(&self, id: Option<&Uuid>) -> bool {
        match (self, id) {
            (Streams::All, _) => true,
            (Streams::Some(list), Some(id)) => list.contains(id),
            // A request about no stream in particular (e.g. the stream list) needs `*`.
            (Streams::Some(_), None) => false,
        }
    }
}

/// A static token with its scope.
#[derive(Clone, Debug, Serialize)]
pub struct StaticToken {
    #[serde(serialize_with = "super::ser_masked")]
    pub token: String,
    pub streams: Streams,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AuthConfig {
    pub enabled: bool,
    pub tokens: Vec<StaticToken>,
    #[serde(serialize_with = "super::ser_masked")]
    pub jwt_secret: String,
    #[serde(serialize_with = "super::ser_masked")]
    pub link_secret: String,
}

/// Parses a stream list: `*` or UUIDs.
pub fn parse_streams(list: &[String]) -> Result<Streams, String> {
    if list.is_empty() || list.iter().any(|s| s.trim() == "*") {
        return Ok(Streams::All);
    }
    list.iter()
        .map(|s| Uuid::parse_str(s.trim()).map_err(|_| format!("`{s}` is not a UUID or `*`")))
        .collect::<Result<Vec<_>, _>>()
        .map(Streams::Some)
}

/// Parses an action list; empty means every action.
pub fn parse_actions(list: &[String]) -> Result<Vec<Action>, String> {
    if list.is_empty() {
        return Ok(vec![
            Action::Live,
            Action::Archive,
            Action::Admin,
            Action::Metrics,
        ]);
    }
    list.iter()
        .map(|a| {
            Action::parse(a).ok_or_else(|| {
                format!("`{a}` is not an action: expected live, archive, admin or metrics")
            })
        })
        .collect()
}

/// Resolves `[auth]`; errors are (key, message).
pub(super) fn resolve(raw: RawAuth) -> Result<AuthConfig, (String, String)> {
    let mut tokens = Vec::new();
    for (i, t) in raw.tokens.iter().enumerate() {
        let key = |k: &str| format!("auth.tokens[{i}].{k}");
        if t.token.len() < 16 {
            return Err((
                key("token"),
                "a token must have at least 16 characters".into(),
            ));
        }
        tokens.push(StaticToken {
            token: t.token.clone(),
            streams: parse_streams(&t.streams).map_err(|m| (key("streams"), m))?,
            actions: parse_actions(&t.actions).map_err(|m| (key("actions"), m))?,
        });
    }
    if !raw.jwt_secret.is_empty() && raw.jwt_secret.len() < 32 {
        return Err((
            "auth.jwt_secret".into(),
            "an HS256 secret must have at least 32 characters".into(),
        ));
    }
    if raw.enabled && tokens.is_empty() && raw.jwt_secret.is_empty() {
        return Err((
            "auth.enabled".into(),
            "auth is on but there is no way in: add `tokens` or a `jwt_secret`".into(),
        ));
    }
    let link_secret = if raw.link_secret.is_empty() {
        raw.jwt_secret.clone()
    } else {
        raw.link_secret
    };
    Ok(AuthConfig {
        enabled: raw.enabled,
        tokens,
        jwt_secret: raw.jwt_secret,
        link_secret,
    })
}

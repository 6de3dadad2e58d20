//! Configuration: the original's `conf.toml`/`conf.json`, loaded, checked and resolved into typed
//! settings.
//!
//! - `mod.rs`: the model (typed settings), [`ConfigError`], credential masking.
//! - `load`: reading the file (format by final extension, any path), unknown keys, and the file,
//!   line and key of errors.
//! - `resolve` (one function per section) and `streams` (stream entries): the original's
//!   defaults (except its 30 ms `ms_per_file` fallback: ours is 30000) and value checks.
//! - `amount`: durations and sizes with units; `auth`, `limits`, `cluster`, `webrtc`: their
//!   sections.
//! - `persist`: editing the file for `[api] persist`.
//!
//! Does not belong here: acting on the settings (`app`).

mod amount;
pub mod auth;
pub mod cluster;
pub mod limits;
mod load;
pub mod persist;
mod raw;
mod resolve;
mod streams;
pub mod webrtc;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

pub use raw::RawConfig;

/// Fallback chunk length when neither the stream nor `[archive]` sets `ms_per_file`.
pub const DEFAULT_MS_PER_FILE: i64 = 30_000;

/// A configuration error: where it is and what was expected.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted key path, e.g. `rtsp_streams[0].output_types`; empty if unknown.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One listener (`[api]` or `[video]`).
#[derive(Clone, Debug, Serialize)]
pub struct ServerConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub mode: String,
    pub verbose: String,
    /// `[api]` only (ours): persist `enable_camera`/`disable_camera` to the file.
    pub persist: bool,
}

impl ServerConfig {
    /// `host:port` to bind; an empty host means all interfaces.
    pub fn bind_addr(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            self.host.as_str()
        };
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct HlsConfig {
    pub ms_per_segment: i64,
    pub directory: String,
    pub window_size: u32,
    pub window_capacity: u32,
    pub low_latency: bool,
    /// LL-HLS part target, at most `ms_per_segment`.
    pub ms_per_part: i64,
    pub mirror_to_disk: bool,
    pub always_remux: bool,
    /// The newest media (ms) of a watched stream kept in memory (0: all); older parts are
    /// served from files.
    pub memory_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MinioConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    #[serde(serialize_with = "ser_masked")]
    pub password: String,
    pub default_bucket: String,
    pub default_path: String,
    pub use_ssl: bool,
    pub region: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ArchiveConfig {
    pub recording: bool,
    pub serving: bool,
    pub directory: String,
    pub ms_per_file: i64,
    pub minio_settings: MinioConfig,
    /// Fragment length inside a file: what a crash can cost at most.
    pub fragment_ms: i64,
    /// Two segments closer than this are one range.
    pub gap_tolerance_ms: i64,
    /// The longest clip `/archive/{id}/clip.mp4` builds.
    pub max_clip_ms: i64,
    /// A thumbnail (JPEG) of the recording every this many ms; 0: none.
    pub thumbnail_interval_ms: i64,
    /// Retention: delete segments older than this (all streams, unless a stream sets its own).
    pub max_age_s: Option<u64>,
    /// Retention: keep each stream under this many bytes (unless a stream sets its own).
    pub max_bytes: Option<u64>,
    /// Retention: delete the oldest local files while a disk has less free space than this.
    pub min_free_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CorsConfig {
    pub enabled: bool,
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct OnDemandConfig {
    pub enabled: bool,
    pub idle_ms: i64,
    pub health_check: bool,
    pub health_interval_ms: i64,
    pub health_timeout_ms: i64,
}

/// RTSP lower transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

/// Where a stream's frames come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceSpec {
    Rtsp {
        #[serde(serialize_with = "ser_masked_url")]
        url: String,
        transport: Transport,
    },
    LocalFile {
        file: PathBuf,
        #[serde(rename = "loop")]
        looped: bool,
    },
    /// Another fleet node's live stream of the camera it owns (`ws://…/ws/live?…`).
    Peer { url: String, node: String },
}

impl SourceSpec {
    /// What `/status` shows as `url`: the RTSP URL with credentials masked, or the file path.
    pub fn display_url(&self) -> String {
        match self {
            SourceSpec::Rtsp { url, .. } => mask_url(url),
            SourceSpec::LocalFile { file, .. } => file.display().to_string(),
            SourceSpec::Peer { url, node } => format!("{url} (node {node})"),
        }
    }
}

/// Output types of a stream, as the original numbers them in `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outputs {
    pub mse: bool,
    pub hls: bool,
    /// Ours: WebRTC (WHEP, `/whep/{id}`).
    pub webrtc: bool,
    /// The numeric codes in config order (2 = hls, 3 = mse; ours: 5 = webrtc, 4 being local
    /// files in `supported_output_types`).
    pub codes: Vec<u8>,
}

impl Outputs {
    /// Parses the original's `output_types` list; the error text is the original's.
    pub fn parse(list: &[String]) -> Result<Outputs, String> {
        let mut out = Outputs::default();
        for t in list {
            match t.to_ascii_lowercase().as_str() {
                "mse" => {
                    out.mse = true;
                    out.codes.push(3);
                }
                "hls" => {
                    out.hls = true;
                    out.codes.push(2);
                }
                "webrtc" => {
                    out.webrtc = true;
                    out.codes.push(5);
                }
                "rtsp" => return Err(format!("stream type is not supported. Type: '{t}'")),
                _ => return Err(format!("stream type does not exists. Type: '{t}'")),
            }
        }
        Ok(out)
    }

    /// The outputs that are on, by their config names.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.mse, "mse"),
            (self.hls, "hls"),
            (self.webrtc, "webrtc"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n)
        .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Filesystem,
    Minio,
}

/// A stream's resolved archive settings (only present when archive storage is needed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamArchiveConfig {
    pub recording: bool,
    pub kind: StorageKind,
    pub directory: String,
    pub ms_per_file: i64,
    pub minio_bucket: String,
    pub minio_path: String,
    pub max_age_s: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// One `[[webhooks]]` entry (ours): where to POST which events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookConfig {
    #[serde(serialize_with = "ser_masked_url")]
    pub url: String,
    /// Empty: every event.
    pub events: Vec<crate::events::EventKind>,
}

/// One stream, resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamConfig {
    pub id: Uuid,
    pub source: SourceSpec,
    pub outputs: Outputs,
    pub verbose: String,
    pub on_demand: bool,
    pub archive: Option<StreamArchiveConfig>,
}

/// The whole resolved configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub path: PathBuf,
    pub api: ServerConfig,
    pub video: ServerConfig,
    pub hls: HlsConfig,
    pub archive: ArchiveConfig,
    pub cors: CorsConfig,
    pub on_demand: OnDemandConfig,
    pub auth: auth::AuthConfig,
    pub limits: limits::LimitsConfig,
    pub webrtc: webrtc::WebrtcConfig,
    /// `[cluster]`: `None` for a single gateway.
    pub cluster: Option<cluster::ClusterConfig>,
    pub webhooks: Vec<WebhookConfig>,
    pub streams: Vec<StreamConfig>,
    /// Things worth telling the user that do not stop the start (unknown keys, aliases, …).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Config {
    /// Idle time of on-demand streams.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.on_demand.idle_ms as u64)
    }
}

/// An URL with any user name and password replaced by `***`. Anything unparsable is masked whole
/// after its scheme, so that no credential can leak through a malformed value.
pub fn mask_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => match raw.find("://") {
            Some(i) if raw.contains('@') => format!("{}://***", &raw[..i]),
            _ => raw.to_owned(),
        },
    }
}

fn ser_masked<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_empty() { "" } else { "***" })
}

fn ser_masked_url<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url(v))
}

#[cfg(test)]
mod tests;

//! The configuration file as written by users of the original: every key of both the v0.6 and the
//! newer layout, with the original's defaults. Nothing here is validated; see `resolve.rs`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawConfig {
    pub api: RawServer,
    pub video: RawServer,
    pub hls: RawHls,
    pub archive: RawArchive,
    pub cors: RawCors,
    pub on_demand: RawOnDemand,
    /// Ours: off unless this section turns it on.
    pub auth: RawAuth,
    /// Ours: `[[webhooks]]`.
    pub webhooks: Vec<RawWebhook>,
    /// Ours: `[limits]`.
    pub limits: super::limits::RawLimits,
    /// Ours: `[cluster]` (absent: a single gateway).
    pub cluster: Option<super::cluster::RawCluster>,
    /// Ours: `[webrtc]` (the WHEP output's socket and addresses).
    pub webrtc: super::webrtc::RawWebrtc,
    pub rtsp_streams: Vec<RawStream>,
    pub local_files: Vec<RawLocalFile>,
}

/// `[api]` and `[video]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawServer {
    /// Only meaningful for `[api]`: the API server starts only when true. Default false.
    pub enabled: bool,
    /// Bind host; "" means all interfaces. Default "".
    pub host: String,
    /// Port; 0 means any free port. Default 0.
    pub port: u16,
    /// `release` or `debug` (accepted, no effect). Default "".
    pub mode: String,
    /// `""`, `v`, `vv`, `vvv`. Default "".
    pub verbose: String,
    /// Ours, `[api]` only: write streams added or removed through the API back to the file.
    pub persist: bool,
}

/// `[hls]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RawHls {
    /// Minimum segment length in ms; cut at the next keyframe. Default 10000.
    pub ms_per_segment: i64,
    /// Where segments would be mirrored on disk. Default `./hls`.
    pub directory: String,
    /// Segments in the live playlist. Default 5, at most `window_capacity`.
    pub window_size: u32,
    /// Default 10.
    pub window_capacity: u32,
    /// Ours: serve LL-HLS (parts, blocking reload). Default true; false gives plain HLS.
    pub low_latency: bool,
    /// Ours: LL-HLS part target in ms. Default 200.
    pub ms_per_part: i64,
    /// Ours: also write the playlist and segments to `directory`. Default false.
    pub mirror_to_disk: bool,
    /// Ours: mux HLS all the time, not only while it is requested. Default false.
    pub always_remux: bool,
    /// Ours: the newest media (ms) of a watched stream kept in memory; older parts of the
    /// window go to files under `directory`. Default 2000; 0 keeps it all in memory.
    pub memory_ms: Option<i64>,
    /// Ours, before `memory_ms`: complete segments kept in memory (`memory_ms` = this many
    /// segments' worth; 0: all in memory).
    pub memory_segments: Option<u32>,
}

impl Default for RawHls {
    fn default() -> Self {
        Self {
            ms_per_segment: 10_000,
            directory: "./hls".into(),
            window_size: 5,
            window_capacity: 10,
            low_latency: true,
            ms_per_part: 200,
            mirror_to_disk: false,
            always_remux: false,
            memory_ms: None,
            memory_segments: None,
        }
    }
}

/// `[archive]`: `enabled` (v0.6) is an alias of `recording` (newer).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawArchive {
    pub enabled: Option<bool>,
    pub recording: Option<bool>,
    pub serving: bool,
    pub directory: String,
    pub ms_per_file: i64,
    pub minio_settings: RawMinio,
    // Ours (not in the original).
    pub fragment_ms: i64,
    pub gap_tolerance_ms: i64,
    pub max_clip_ms: i64,
    pub thumbnail_interval_ms: Option<i64>,
    pub max_age: Option<RawAmount>,
    pub max_bytes: Option<RawAmount>,
    pub min_free_bytes: Option<RawAmount>,
}

/// A duration (`"7d"`, `"12h"`, `"90m"`, `"30s"`, or seconds) or a size (`"500GB"`, `"2GiB"`,
/// `"800MB"`, or bytes), as the user wrote it; resolved with its key name for errors.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawAmount {
    Number(u64),
    Text(String),
}

/// `[archive.minio_settings]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawMinio {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub default_bucket: String,
    pub default_path: String,
    // Ours: https to the S3 endpoint, and its region (any works with MinIO).
    pub use_ssl: bool,
    pub region: String,
}

/// `[cors]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawCors {
    pub enabled: bool,
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
}

/// `[on_demand]`. Values ≤ 0 fall back to the defaults.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawOnDemand {
    pub enabled: bool,
    pub idle_ms: i64,
    pub health_check: bool,
    pub health_interval_ms: i64,
    pub health_timeout_ms: i64,
}

/// A stream's `archive = { ... }`.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(default)]
pub struct RawStreamArchive {
    pub enabled: Option<bool>,
    pub recording: Option<bool>,
    pub ms_per_file: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub directory: String,
    pub minio_bucket: String,
    pub minio_path: String,
    // Ours: retention for this stream.
    pub max_age: Option<RawAmount>,
    pub max_bytes: Option<RawAmount>,
}

/// `[[rtsp_streams]]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawStream {
    pub guid: String,
    pub url: String,
    /// Documented as `rtsp`; unused, as in the original.
    #[serde(rename = "type")]
    pub kind: String,
    pub output_types: Vec<String>,
    pub verbose: String,
    pub archive: RawStreamArchive,
    pub on_demand: Option<bool>,
    /// Ours: `tcp` (default) or `udp`.
    pub transport: String,
}

/// `[[local_files]]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawLocalFile {
    pub guid: String,
    pub file: String,
    pub output_types: Vec<String>,
    #[serde(rename = "loop")]
    pub looped: bool,
    pub verbose: String,
    pub archive: RawStreamArchive,
    pub on_demand: Option<bool>,
}

/// `[auth]` (ours).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawAuth {
    pub enabled: bool,
    pub tokens: Vec<RawToken>,
    pub jwt_secret: String,
    pub link_secret: String,
}

/// One static bearer token of `[auth] tokens`.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(default)]
pub struct RawToken {
    pub token: String,
    pub streams: Vec<String>,
    pub actions: Vec<String>,
}

/// One `[[webhooks]]` entry (ours).
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(default)]
pub struct RawWebhook {
    pub url: String,
    pub events: Vec<String>,
}

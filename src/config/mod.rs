//! Configuration: the original's `conf.toml`/`conf.json`, loaded, checked and resolved into typed
//! settings.
//!
//! Belongs here: reading the file (format by final extension, any path), reporting errors with
//! file, line and key, warning about unknown keys, applying the original's defaults (except its
//! 30 ms `ms_per_file` fallback: ours is 30000), and masking credentials for display. Does not
//! belong here: acting on the settings (`app`).

pub mod auth;
pub mod limits;
pub mod persist;
mod raw;
mod streams;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

pub use raw::RawConfig;
use raw::RawStream;
use streams::{resolve_stream, Shared, StreamFields};

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
    /// Complete segments kept in memory (0: all); older ones are served from files.
    pub memory_segments: u32,
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
}

impl SourceSpec {
    /// What `/status` shows as `url`: the RTSP URL with credentials masked, or the file path.
    pub fn display_url(&self) -> String {
        match self {
            SourceSpec::Rtsp { url, .. } => mask_url(url),
            SourceSpec::LocalFile { file, .. } => file.display().to_string(),
        }
    }
}

/// Output types of a stream, as the original numbers them in `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outputs {
    pub mse: bool,
    pub hls: bool,
    /// The numeric codes in config order (2 = hls, 3 = mse).
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
                "rtsp" => return Err(format!("stream type is not supported. Type: '{t}'")),
                _ => return Err(format!("stream type does not exists. Type: '{t}'")),
            }
        }
        Ok(out)
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
    pub webhooks: Vec<WebhookConfig>,
    pub streams: Vec<StreamConfig>,
    /// Things worth telling the user that do not stop the start (unknown keys, aliases, …).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads, parses and resolves a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            key: String::new(),
            message: format!("cannot read file: {e}"),
        })?;
        Self::from_str_at(&text, path)
    }

    /// Parses and resolves configuration text; `path` decides the format and names errors.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut unknown = Vec::new();
        let mut raw = parse_raw(text, path, &mut unknown)?;
        let mut case_folded = false;
        // The original's decoders (Go's encoding/json, BurntSushi/toml) fall back to matching
        // keys case-insensitively, so `"Guid"` or `[API]` work there: do the same when that is
        // what makes unknown keys known.
        if unknown
            .iter()
            .any(|k| k.chars().any(|c| c.is_ascii_uppercase()))
        {
            if let Some(lowered) = lowercase_keys(text, path) {
                let mut still_unknown = Vec::new();
                match parse_raw(&lowered, path, &mut still_unknown) {
                    Ok(r) => {
                        // Folding helped if it changed which keys are unknown (not merely
                        // their case).
                        let folded: Vec<String> =
                            unknown.iter().map(|k| k.to_ascii_lowercase()).collect();
                        if still_unknown != folded {
                            raw = r;
                            unknown = still_unknown;
                            case_folded = true;
                        }
                    }
                    // A key that only matches case-insensitively holds a bad value: say so.
                    // (Line numbers of the folded text are not the user's: leave them out.)
                    Err(e) => return Err(ConfigError { line: None, ..e }),
                }
            }
        }
        let mut cfg = resolve(raw, text, path)?;
        if case_folded {
            cfg.warnings.push(format!(
                "{}: keys were matched case-insensitively, as the original does; write them in lower case",
                path.display()
            ));
        }
        for key in unknown {
            cfg.warnings
                .push(format!("{}: unknown key `{key}` ignored", path.display()));
        }
        Ok(cfg)
    }

    /// Idle time of on-demand streams.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.on_demand.idle_ms as u64)
    }
}

fn parse_raw(text: &str, path: &Path, unknown: &mut Vec<String>) -> Result<RawConfig, ConfigError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let err = |line: Option<usize>, key: String, message: String| ConfigError {
        file: path.to_owned(),
        line,
        key,
        message,
    };
    let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
    match ext.as_str() {
        "json" => {
            let mut de = serde_json::Deserializer::from_str(text);
            let ignored = serde_ignored::Deserializer::new(&mut de, &mut on_unknown);
            serde_path_to_error::deserialize(ignored).map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let line = (inner.line() > 0).then_some(inner.line());
                err(line, clean_key(&key), strip_position(&inner.to_string()))
            })
        }
        "toml" => {
            let de = toml::Deserializer::parse(text).map_err(|e| {
                let line = e.span().map(|s| line_of(text, s.start));
                err(line, String::new(), e.message().trim().to_owned())
            })?;
            let ignored = serde_ignored::Deserializer::new(de, &mut on_unknown);
            serde_path_to_error::deserialize(ignored).map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let line = inner.span().map(|s| line_of(text, s.start));
                err(line, clean_key(&key), inner.message().trim().to_owned())
            })
        }
        _ => Err(err(
            None,
            String::new(),
            format!("unknown configuration format `.{ext}`: expected .toml or .json"),
        )),
    }
}

/// The same document with every key in lower case, or `None` if it does not parse.
fn lowercase_keys(text: &str, path: &Path) -> Option<String> {
    fn json(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => serde_json::Value::Object(
                m.into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), json(v)))
                    .collect(),
            ),
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(json).collect())
            }
            other => other,
        }
    }
    fn toml(v: toml::Value) -> toml::Value {
        match v {
            toml::Value::Table(t) => toml::Value::Table(
                t.into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), toml(v)))
                    .collect(),
            ),
            toml::Value::Array(a) => toml::Value::Array(a.into_iter().map(toml).collect()),
            other => other,
        }
    }
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::to_string(&json(serde_json::from_str(text).ok()?)).ok()
    } else {
        let table: toml::Table = toml::from_str(text).ok()?;
        toml::to_string(&toml(toml::Value::Table(table))).ok()
    }
}

/// serde_path_to_error writes `.` for the root; we want nothing.
fn clean_key(key: &str) -> String {
    if key == "." {
        String::new()
    } else {
        key.to_owned()
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of the first occurrence of `needle` as a quoted string, for semantic errors found
/// after parsing.
/// What a [`raw::RawAmount`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Bytes,
}

/// Parses `"7d"`/`"12h"`/`"30m"`/`"45s"` (or a number of seconds) and `"500GB"`/`"2GiB"`/
/// `"800MB"`/`"64KiB"` (or a number of bytes).
pub(crate) fn parse_amount(v: &raw::RawAmount, unit: Unit) -> Result<u64, String> {
    let text = match v {
        raw::RawAmount::Number(n) => return Ok(*n),
        raw::RawAmount::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, suffix) = text.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let suffix = suffix.trim();
    let factor: f64 = match (unit, suffix.to_ascii_lowercase().as_str()) {
        (Unit::Seconds, "" | "s") => 1.0,
        (Unit::Seconds, "m" | "min") => 60.0,
        (Unit::Seconds, "h") => 3600.0,
        (Unit::Seconds, "d") => 86_400.0,
        (Unit::Seconds, "w") => 7.0 * 86_400.0,
        (Unit::Bytes, "" | "b") => 1.0,
        (Unit::Bytes, "kb") => 1e3,
        (Unit::Bytes, "mb") => 1e6,
        (Unit::Bytes, "gb") => 1e9,
        (Unit::Bytes, "tb") => 1e12,
        (Unit::Bytes, "kib") => 1024.0,
        (Unit::Bytes, "mib") => 1024.0 * 1024.0,
        (Unit::Bytes, "gib") => 1024.0 * 1024.0 * 1024.0,
        (Unit::Bytes, "tib") => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        (Unit::Seconds, _) => {
            return Err(format!(
                "`{text}`: expected a duration such as \"7d\", \"12h\", \"30m\" or \"45s\""
            ))
        }
        (Unit::Bytes, _) => {
            return Err(format!(
                "`{text}`: expected a size such as \"500GB\", \"2GiB\" or \"800MB\""
            ))
        }
    };
    Ok((n * factor).round() as u64)
}

/// The line where a key (the last part of a dotted name) is first assigned.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start().trim_start_matches(['{', ',', ' ']);
        if t.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', ':']))
            || t.strip_prefix(&format!("\"{key}\""))
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        {
            return Some(line_of(text, offset));
        }
        offset += line.len();
    }
    text.find(key).map(|i| line_of(text, i))
}

fn line_of_value(text: &str, needle: &str) -> Option<usize> {
    for quoted in [format!("\"{needle}\""), format!("'{needle}'")] {
        if let Some(i) = text.find(&quoted) {
            return Some(line_of(text, i));
        }
    }
    None
}

fn resolve(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let err = |needle: &str, key: String, message: String| ConfigError {
        file: path.to_owned(),
        line: line_of_value(text, needle),
        key,
        message,
    };

    let mut hls = raw.hls;
    if hls.ms_per_segment <= 0 {
        hls.ms_per_segment = 10_000;
    }
    if hls.directory.is_empty() {
        hls.directory = "./hls".into();
    }
    if hls.window_capacity == 0 {
        hls.window_capacity = 10;
    }
    if hls.window_size == 0 {
        hls.window_size = 5;
    }
    hls.window_size = hls.window_size.min(hls.window_capacity);
    if hls.ms_per_part <= 0 {
        hls.ms_per_part = 200;
    }
    hls.ms_per_part = hls.ms_per_part.min(hls.ms_per_segment);

    let pos = |v: i64, d: i64| if v > 0 { v } else { d };
    let a = raw.archive;
    if a.enabled.is_some() {
        warnings.push(
            "`archive.enabled` is the v0.6 name of `archive.recording`; it is honoured as such"
                .to_owned(),
        );
    }
    let amount = |v: &Option<raw::RawAmount>, key: &str, unit: Unit| {
        v.as_ref()
            .map(|v| {
                parse_amount(v, unit).map_err(|message| ConfigError {
                    file: path.to_owned(),
                    line: line_of_key(text, key.rsplit('.').next().unwrap_or(key)),
                    key: key.to_owned(),
                    message,
                })
            })
            .transpose()
    };
    let archive = ArchiveConfig {
        recording: a.recording.or(a.enabled).unwrap_or(false),
        serving: a.serving,
        directory: a.directory,
        ms_per_file: a.ms_per_file,
        minio_settings: MinioConfig {
            host: a.minio_settings.host,
            port: a.minio_settings.port,
            user: a.minio_settings.user,
            password: a.minio_settings.password,
            default_bucket: a.minio_settings.default_bucket,
            default_path: a.minio_settings.default_path,
            use_ssl: a.minio_settings.use_ssl,
            region: if a.minio_settings.region.is_empty() {
                "us-east-1".to_owned()
            } else {
                a.minio_settings.region
            },
        },
        fragment_ms: pos(a.fragment_ms, 1_000).clamp(100, 10_000),
        gap_tolerance_ms: pos(a.gap_tolerance_ms, 500),
        max_clip_ms: pos(a.max_clip_ms, 2 * 3_600_000),
        max_age_s: amount(&a.max_age, "archive.max_age", Unit::Seconds)?,
        max_bytes: amount(&a.max_bytes, "archive.max_bytes", Unit::Bytes)?,
        min_free_bytes: amount(&a.min_free_bytes, "archive.min_free_bytes", Unit::Bytes)?,
    };

    // A section's resolver says (key, message); the line is found here.
    let located = |(key, message): (String, String)| ConfigError {
        file: path.to_owned(),
        line: line_of_key(text, key.rsplit('.').next().unwrap_or(&key)),
        key,
        message,
    };
    let auth = auth::resolve(raw.auth).map_err(located)?;
    let limits = limits::resolve(raw.limits).map_err(located)?;

    let mut webhooks = Vec::new();
    for (i, w) in raw.webhooks.iter().enumerate() {
        let err = |key: &str, message: String| ConfigError {
            file: path.to_owned(),
            line: line_of_value(text, &w.url),
            key: format!("webhooks[{i}].{key}"),
            message,
        };
        match url::Url::parse(&w.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => return Err(err("url", format!("`{}` is not an http(s) URL", w.url))),
        }
        let mut events = Vec::with_capacity(w.events.len());
        for name in &w.events {
            let Some(kind) = crate::events::EventKind::parse(name) else {
                return Err(err(
                    "events",
                    format!(
                        "`{name}` is not an event: expected one of {}",
                        crate::events::EventKind::names().join(", ")
                    ),
                ));
            };
            events.push(kind);
        }
        webhooks.push(WebhookConfig {
            url: w.url.clone(),
            events,
        });
    }

    let od = raw.on_demand;
    let on_demand = OnDemandConfig {
        enabled: od.enabled,
        idle_ms: pos(od.idle_ms, 30_000),
        health_check: od.health_check,
        health_interval_ms: pos(od.health_interval_ms, 30_000),
        health_timeout_ms: pos(od.health_timeout_ms, 3_000),
    };

    let c = raw.cors;
    if c.enabled {
        if c.allow_origins.is_empty() {
            return Err(err(
                "",
                "cors.allow_origins".into(),
                "must list at least one origin when CORS is enabled".into(),
            ));
        }
        for o in &c.allow_origins {
            let ok = o == "*" || o.starts_with("http://") || o.starts_with("https://");
            if !ok {
                return Err(err(
                    o,
                    "cors.allow_origins".into(),
                    format!("origin `{o}` must be `*` or start with http:// or https://"),
                ));
            }
        }
    }
    let mut cors = CorsConfig {
        enabled: c.enabled,
        allow_origins: c.allow_origins,
        allow_methods: c.allow_methods,
        allow_headers: c.allow_headers,
        expose_headers: c.expose_headers,
        allow_credentials: c.allow_credentials,
    };
    if cors.allow_credentials && cors.allow_origins.iter().any(|o| o == "*") {
        warnings.push(
            "[CORS] Insecure setup: allow_credentials with a `*` origin; credentials disabled"
                .into(),
        );
        cors.allow_credentials = false;
    }

    let mut streams: Vec<StreamConfig> = Vec::new();
    let mut push_stream = |s: StreamConfig, warnings: &mut Vec<String>| {
        if let Some(old) = streams.iter_mut().find(|o| o.id == s.id) {
            warnings.push(format!(
                "stream {} is defined twice; the later entry wins",
                s.id
            ));
            *old = s;
        } else {
            streams.push(s);
        }
    };

    let shared = Shared {
        text,
        path,
        archive: &archive,
        on_demand_default: on_demand.enabled,
    };
    for (i, s) in raw.rtsp_streams.into_iter().enumerate() {
        let key = |k: &str| format!("rtsp_streams[{i}].{k}");
        let RawStream {
            guid,
            url,
            kind: _,
            output_types,
            verbose,
            archive: sa,
            on_demand: sod,
            transport,
        } = s;
        let fields = StreamFields {
            key: &key,
            guid: &guid,
            output_types: &output_types,
            verbose,
            archive: &sa,
            on_demand: sod,
            fill_archive_defaults: true,
        };
        let source = || {
            let transport = match transport.to_ascii_lowercase().as_str() {
                "" | "tcp" => Transport::Tcp,
                "udp" => Transport::Udp,
                _ => {
                    return Err(err(
                        &transport,
                        key("transport"),
                        format!("expected `tcp` or `udp`, found `{transport}`"),
                    ))
                }
            };
            if !url.is_empty() {
                if let Err(e) = url::Url::parse(&url) {
                    return Err(ConfigError {
                        file: path.to_owned(),
                        line: line_of_value(text, &url),
                        key: key("url"),
                        message: format!("not a valid URL ({e}): {}", mask_url(&url)),
                    });
                }
            }
            Ok(SourceSpec::Rtsp {
                url: url.clone(),
                transport,
            })
        };
        if let Some(s) = resolve_stream(&shared, fields, source, &mut warnings)? {
            push_stream(s, &mut warnings);
        }
    }
    for (i, f) in raw.local_files.into_iter().enumerate() {
        let key = |k: &str| format!("local_files[{i}].{k}");
        let fields = StreamFields {
            key: &key,
            guid: &f.guid,
            output_types: &f.output_types,
            verbose: f.verbose.clone(),
            archive: &f.archive,
            on_demand: f.on_demand,
            // The original does not fill archive defaults in for local files.
            fill_archive_defaults: false,
        };
        let source = || {
            if f.file.is_empty() {
                return Err(err(
                    "",
                    key("file"),
                    "a local file source needs `file`".into(),
                ));
            }
            Ok(SourceSpec::LocalFile {
                file: PathBuf::from(&f.file),
                looped: f.looped,
            })
        };
        if let Some(s) = resolve_stream(&shared, fields, source, &mut warnings)? {
            push_stream(s, &mut warnings);
        }
    }

    Ok(Config {
        path: path.to_owned(),
        api: server(raw.api),
        video: ServerConfig {
            enabled: true,
            ..server(raw.video)
        },
        hls: HlsConfig {
            ms_per_segment: hls.ms_per_segment,
            directory: hls.directory,
            window_size: hls.window_size,
            window_capacity: hls.window_capacity,
            low_latency: hls.low_latency,
            ms_per_part: hls.ms_per_part,
            mirror_to_disk: hls.mirror_to_disk,
            always_remux: hls.always_remux,
            memory_segments: hls.memory_segments,
        },
        archive,
        cors,
        on_demand,
        auth,
        limits,
        webhooks,
        streams,
        warnings,
    })
}

fn server(r: raw::RawServer) -> ServerConfig {
    ServerConfig {
        enabled: r.enabled,
        host: r.host,
        port: r.port,
        mode: r.mode,
        verbose: r.verbose,
        persist: r.persist,
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

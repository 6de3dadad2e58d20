//! Resolving a parsed file into typed settings: the original's defaults, value checks with the
//! file, line and key of each error, and warnings for what is accepted but odd. One function
//! per section; stream entries are `streams`'s.
//!
//! Belongs here: rules about values. Does not belong here: reading text (`load`).

use std::path::{Path, PathBuf};

use super::amount::{parse_amount, Unit};
use super::load::{line_of_key, line_of_value};
use super::raw::{self, RawConfig, RawStream};
use super::streams::{resolve_stream, Shared, StreamFields};
use super::*;

/// Where errors found while resolving are: the text and its file.
#[derive(Clone, Copy)]
struct At<'a> {
    text: &'a str,
    path: &'a Path,
}

impl At<'_> {
    /// An error at the first line that holds `needle` as a quoted value.
    fn value(&self, needle: &str, key: String, message: String) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            line: line_of_value(self.text, needle),
            key,
            message,
        }
    }

    /// An error at the line that assigns the last part of `key`.
    fn key(&self, key: String, message: String) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            line: line_of_key(self.text, key.rsplit('.').next().unwrap_or(&key)),
            key,
            message,
        }
    }
}

/// A number that must be positive, else the default.
fn pos(v: i64, d: i64) -> i64 {
    if v > 0 {
        v
    } else {
        d
    }
}

pub(super) fn resolve(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let at = At { text, path };
    let mut warnings = Vec::new();
    let hls = hls(raw.hls);
    let archive = archive(raw.archive, at, &mut warnings)?;
    let auth = auth::resolve(raw.auth).map_err(|(k, m)| at.key(k, m))?;
    let limits = limits::resolve(raw.limits).map_err(|(k, m)| at.key(k, m))?;
    let webrtc = webrtc::resolve(raw.webrtc).map_err(|(k, m)| at.key(k, m))?;
    let cluster = cluster::resolve(raw.cluster).map_err(|(k, m)| at.key(k, m))?;
    if cluster.is_some() && !cfg!(feature = "cluster") {
        return Err(at.key(
            "cluster".into(),
            "this build has no fleet support: build with `cargo build --release --features \
             cluster` (it needs protoc: apt-get install protobuf-compiler)"
                .into(),
        ));
    }
    let webhooks = webhooks(&raw.webhooks, at)?;
    let on_demand = on_demand(raw.on_demand);
    let cors = cors(raw.cors, at, &mut warnings)?;
    let shared = Shared {
        text,
        path,
        archive: &archive,
        on_demand_default: on_demand.enabled,
    };
    let streams = streams(
        raw.rtsp_streams,
        raw.local_files,
        &shared,
        at,
        &mut warnings,
    )?;
    Ok(Config {
        path: path.to_owned(),
        api: server(raw.api),
        video: ServerConfig {
            enabled: true,
            ..server(raw.video)
        },
        hls,
        archive,
        cors,
        on_demand,
        auth,
        limits,
        webrtc,
        cluster,
        webhooks,
        streams,
        warnings,
    })
}

/// `[hls]`: the original's defaults; a window never larger than its capacity, a part never
/// longer than a segment.
fn hls(raw: raw::RawHls) -> HlsConfig {
    let mut hls = raw;
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
    let memory_ms = match (hls.memory_ms, hls.memory_segments) {
        (Some(ms), _) => ms.max(0) as u64,
        (None, Some(n)) => u64::from(n) * hls.ms_per_segment as u64,
        (None, None) => DEFAULT_HLS_MEMORY_MS,
    };

    HlsConfig {
        ms_per_segment: hls.ms_per_segment,
        directory: hls.directory,
        window_size: hls.window_size,
        window_capacity: hls.window_capacity,
        low_latency: hls.low_latency,
        ms_per_part: hls.ms_per_part,
        mirror_to_disk: hls.mirror_to_disk,
        always_remux: hls.always_remux,
        memory_ms,
    }
}

/// `[hls] memory_ms` by default: two seconds of parts (ten 200 ms parts, more than LL-HLS
/// players hold back) stay in memory; the rest of a watched window is in files.
const DEFAULT_HLS_MEMORY_MS: u64 = 2000;

/// `[archive]`, with retention amounts in units.
fn archive(
    a: raw::RawArchive,
    at: At<'_>,
    warnings: &mut Vec<String>,
) -> Result<ArchiveConfig, ConfigError> {
    if a.enabled.is_some() {
        warnings.push(
            "`archive.enabled` is the v0.6 name of `archive.recording`; it is honoured as such"
                .to_owned(),
        );
    }
    let amount = |v: &Option<raw::RawAmount>, key: &str, unit: Unit| {
        v.as_ref()
            .map(|v| parse_amount(v, unit).map_err(|message| at.key(key.to_owned(), message)))
            .transpose()
    };
    Ok(ArchiveConfig {
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
        // 0 (or less) turns thumbnails off; at least one a second.
        thumbnail_interval_ms: match a.thumbnail_interval_ms {
            None => 60_000,
            Some(ms) if ms <= 0 => 0,
            Some(ms) => ms.max(1_000),
        },
        max_age_s: amount(&a.max_age, "archive.max_age", Unit::Seconds)?,
        max_bytes: amount(&a.max_bytes, "archive.max_bytes", Unit::Bytes)?,
        min_free_bytes: amount(&a.min_free_bytes, "archive.min_free_bytes", Unit::Bytes)?,
    })
}

/// `[[webhooks]]`: http(s) URLs and known event names.
fn webhooks(raw: &[raw::RawWebhook], at: At<'_>) -> Result<Vec<WebhookConfig>, ConfigError> {
    let mut webhooks = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let err =
            |key: &str, message: String| at.value(&w.url, format!("webhooks[{i}].{key}"), message);
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

    Ok(webhooks)
}

/// `[on_demand]`.
fn on_demand(od: raw::RawOnDemand) -> OnDemandConfig {
    OnDemandConfig {
        enabled: od.enabled,
        idle_ms: pos(od.idle_ms, 30_000),
        health_check: od.health_check,
        health_interval_ms: pos(od.health_interval_ms, 30_000),
        health_timeout_ms: pos(od.health_timeout_ms, 3_000),
    }
}

/// `[cors]`: origins must be URLs or `*`; credentials never with `*`.
fn cors(
    c: raw::RawCors,
    at: At<'_>,
    warnings: &mut Vec<String>,
) -> Result<CorsConfig, ConfigError> {
    if c.enabled {
        if c.allow_origins.is_empty() {
            return Err(at.value(
                "",
                "cors.allow_origins".into(),
                "must list at least one origin when CORS is enabled".into(),
            ));
        }
        for o in &c.allow_origins {
            let ok = o == "*" || o.starts_with("http://") || o.starts_with("https://");
            if !ok {
                return Err(at.value(
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

    Ok(cors)
}

/// `[[rtsp_streams]]` then `[[local_files]]`; a later entry with the same id wins (warned).
fn streams(
    rtsp: Vec<RawStream>,
    files: Vec<raw::RawLocalFile>,
    shared: &Shared<'_>,
    at: At<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<StreamConfig>, ConfigError> {
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

    for (i, s) in rtsp.into_iter().enumerate() {
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
                    return Err(at.value(
                        &transport,
                        key("transport"),
                        format!("expected `tcp` or `udp`, found `{transport}`"),
                    ))
                }
            };
            if !url.is_empty() {
                if let Err(e) = url::Url::parse(&url) {
                    return Err(at.value(
                        &url,
                        key("url"),
                        format!("not a valid URL ({e}): {}", mask_url(&url)),
                    ));
                }
            }
            Ok(SourceSpec::Rtsp {
                url: url.clone(),
                transport,
            })
        };
        if let Some(s) = resolve_stream(shared, fields, source, warnings)? {
            push_stream(s, warnings);
        }
    }
    for (i, f) in files.into_iter().enumerate() {
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
                return Err(at.value("", key("file"), "a local file source needs `file`".into()));
            }
            Ok(SourceSpec::LocalFile {
                file: PathBuf::from(&f.file),
                looped: f.looped,
            })
        };
        if let Some(s) = resolve_stream(shared, fields, source, warnings)? {
            push_stream(s, warnings);
        }
    }

    Ok(streams)
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

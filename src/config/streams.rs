//! Resolving one `[[rtsp_streams]]` or `[[local_files]]` entry by the original's rules: the
//! checks every kind of entry shares, in the original's order, and its archive defaults.

use std::path::Path;

use uuid::Uuid;

use super::amount::{parse_amount, Unit};
use super::load::line_of_value;
use super::raw::{RawAmount, RawStreamArchive};
use super::{
    ArchiveConfig, ConfigError, Outputs, SourceSpec, StorageKind, StreamArchiveConfig,
    StreamConfig, DEFAULT_MS_PER_FILE,
};

/// What every stream entry is resolved against.
pub(super) struct Shared<'a> {
    pub text: &'a str,
    pub path: &'a Path,
    pub archive: &'a ArchiveConfig,
    pub on_demand_default: bool,
}

/// The fields every kind of stream entry has.
pub(super) struct StreamFields<'a> {
    /// Full key name of a field of this entry, e.g. `rtsp_streams[0].guid`.
    pub key: &'a dyn Fn(&str) -> String,
    pub guid: &'a str,
    pub output_types: &'a [String],
    pub verbose: String,
    pub archive: &'a RawStreamArchive,
    pub on_demand: Option<bool>,
    pub fill_archive_defaults: bool,
}

/// Resolves one stream entry by the original's rules, in its order: a guid that is not a UUID
/// skips the stream with a warning (`Ok(None)`); then output types, then the source's own
/// checks (`source`), then archive storage. A recording stream is never on-demand.
pub(super) fn resolve_stream(
    shared: &Shared<'_>,
    f: StreamFields<'_>,
    source: impl FnOnce() -> Result<SourceSpec, ConfigError>,
    warnings: &mut Vec<String>,
) -> Result<Option<StreamConfig>, ConfigError> {
    let err = |needle: &str, key: String, message: String| ConfigError {
        file: shared.path.to_owned(),
        line: line_of_value(shared.text, needle),
        key,
        message,
    };
    let Ok(id) = Uuid::parse_str(f.guid.trim()) else {
        warnings.push(format!(
            "{}: `{}` = {:?} is not a UUID; stream skipped (as the original does)",
            location(shared.path, line_of_value(shared.text, f.guid)),
            (f.key)("guid"),
            f.guid
        ));
        return Ok(None);
    };
    let outputs = Outputs::parse(f.output_types)
        .map_err(|m| err(&first_bad(f.output_types), (f.key)("output_types"), m))?;
    let source = source()?;
    let mut archive = resolve_stream_archive(f.archive, shared.archive, f.fill_archive_defaults)
        .map_err(|m| err(&f.archive.kind, (f.key)("archive.type"), m))?;
    if let Some(a) = archive.as_mut() {
        let amount = |v: &Option<RawAmount>, name: &str, unit: Unit| {
            v.as_ref()
                .map(|v| {
                    parse_amount(v, unit).map_err(|m| {
                        let needle = match v {
                            RawAmount::Text(t) => t.clone(),
                            RawAmount::Number(n) => n.to_string(),
                        };
                        err(&needle, (f.key)(&format!("archive.{name}")), m)
                    })
                })
                .transpose()
        };
        a.max_age_s =
            amount(&f.archive.max_age, "max_age", Unit::Seconds)?.or(shared.archive.max_age_s);
        a.max_bytes =
            amount(&f.archive.max_bytes, "max_bytes", Unit::Bytes)?.or(shared.archive.max_bytes);
    }
    Ok(Some(StreamConfig {
        id,
        source,
        outputs,
        verbose: f.verbose,
        on_demand: f.on_demand.unwrap_or(shared.on_demand_default)
            && !archive.as_ref().is_some_and(|a| a.recording),
        archive,
    }))
}

fn location(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    }
}

fn first_bad(list: &[String]) -> String {
    list.iter()
        .find(|t| !matches!(t.to_ascii_lowercase().as_str(), "mse" | "hls"))
        .cloned()
        .unwrap_or_default()
}

/// The original's per-stream archive rules: storage is needed when the stream records (its flag
/// and the global one), or when the global `serving` is on and the stream names a directory.
/// `fill_defaults` is false for `[[local_files]]`, which the original does not post-process.
fn resolve_stream_archive(
    sa: &RawStreamArchive,
    global: &ArchiveConfig,
    fill_defaults: bool,
) -> Result<Option<StreamArchiveConfig>, String> {
    let recording = sa.recording.or(sa.enabled).unwrap_or(false) && global.recording;
    let needed = recording || (global.serving && !sa.directory.is_empty());
    if !needed {
        return Ok(None);
    }
    let kind = match sa.kind.to_ascii_lowercase().as_str() {
        "filesystem" => StorageKind::Filesystem,
        "minio" => StorageKind::Minio,
        other => {
            return Err(format!(
                "unsupported archive type `{other}`: expected `filesystem` or `minio`"
            ))
        }
    };
    let pick = |own: &str, global: &str, fallback: &str| -> String {
        if !own.is_empty() {
            own.to_owned()
        } else if fill_defaults && !global.is_empty() {
            global.to_owned()
        } else if fill_defaults {
            fallback.to_owned()
        } else {
            own.to_owned()
        }
    };
    let ms_per_file = if sa.ms_per_file > 0 {
        sa.ms_per_file
    } else if global.ms_per_file > 0 {
        global.ms_per_file
    } else {
        DEFAULT_MS_PER_FILE
    };
    Ok(Some(StreamArchiveConfig {
        recording,
        kind,
        directory: pick(&sa.directory, &global.directory, "./mp4"),
        ms_per_file,
        minio_bucket: pick(&sa.minio_bucket, &global.minio_settings.default_bucket, ""),
        minio_path: pick(&sa.minio_path, &global.minio_settings.default_path, ""),
        max_age_s: None,
        max_bytes: None,
    }))
}

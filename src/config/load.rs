//! Reading a configuration file: the format by its final extension, the original's
//! case-insensitive key matching, unknown keys collected as warnings, and the file, line and
//! key of every error (also for errors found later, while resolving: [`line_of_key`],
//! [`line_of_value`]).
//!
//! Belongs here: text to [`RawConfig`] with positions. Does not belong here: defaults and
//! checks of values (`resolve`).

use std::path::Path;

use super::raw::RawConfig;
use super::{Config, ConfigError};

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
        let mut cfg = super::resolve::resolve(raw, text, path)?;
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

/// The line where a key (the last part of a dotted name) is first assigned.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
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

/// The line of the first occurrence of `needle` as a quoted string, for semantic errors found
/// after parsing.
pub(super) fn line_of_value(text: &str, needle: &str) -> Option<usize> {
    for quoted in [format!("\"{needle}\""), format!("'{needle}'")] {
        if let Some(i) = text.find(&quoted) {
            return Some(line_of(text, i));
        }
    }
    None
}

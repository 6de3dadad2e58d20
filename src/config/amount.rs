//! Amounts with units in the configuration: durations (`"7d"`, `"12h"`, `"30m"`, `"45s"`, or
//! seconds) and sizes (`"500GB"`, `"2GiB"`, `"800MB"`, or bytes). Pure.

use super::raw;

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

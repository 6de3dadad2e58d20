//! `[api] persist = true` (ours): streams added with `/enable_camera` are appended to the
//! configuration file and streams removed with `/disable_camera` are taken out of it, so they
//! survive a restart. The file is edited as text, so its comments and layout stay as they
//! are; the previous version is kept as `<file>.bak`, and the new one is written to a temporary
//! file and renamed over the old (never half-written). TOML files only: a JSON configuration is
//! left alone with a warning.
//!
//! The text edits are pure ([`append_stream`], [`remove_stream`]); [`write_atomically`] does
//! the I/O.

use std::io::Write;
use std::path::Path;

use uuid::Uuid;

use crate::config::{SourceSpec, StreamConfig, Transport};

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The file with a `[[rtsp_streams]]` table for `s` appended.
pub fn append_stream(text: &str, s: &StreamConfig) -> Option<String> {
    let SourceSpec::Rtsp { url, transport } = &s.source else {
        return None;
    };
    let outputs: Vec<String> = s.outputs.names().into_iter().map(quote).collect();
    let mut out = text.trim_end().to_owned();
    out.push_str("\n\n# Added through /enable_camera.\n[[rtsp_streams]]\n");
    out.push_str(&format!("guid = {}\n", quote(&s.id.to_string())));
    out.push_str(&format!("url = {}\n", quote(url)));
    out.push_str(&format!("output_types = [{}]\n", outputs.join(", ")));
    out.push_str(&format!("on_demand = {}\n", s.on_demand));
    if *transport == Transport::Udp {
        out.push_str("transport = \"udp\"\n");
    }
    Some(out)
}

/// Is this line the start of a table (`[x]` or `[[x]]`)?
fn is_table_header(line: &str) -> bool {
    line.trim_start().starts_with('[')
}

/// The file without the `[[rtsp_streams]]` table whose `guid` is `id` (and the comment lines
/// right above it that belong to it); `None` if there is no such table.
pub fn remove_stream(text: &str, id: &Uuid) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let want = id.to_string();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "[[rtsp_streams]]" {
            let end = (i + 1..lines.len())
                .find(|&j| is_table_header(lines[j]))
                .unwrap_or(lines.len());
            let has_id = lines[i + 1..end].iter().any(|l| {
                let l = l.trim();
                l.starts_with("guid")
                    && l.split_once('=').is_some_and(|(_, v)| {
                        v.trim()
                            .trim_matches(['"', '\''])
                            .eq_ignore_ascii_case(&want)
                    })
            });
            if has_id {
                // Comments directly above belong to the table; so does one blank line.
                let mut start = i;
                while start > 0 && lines[start - 1].trim_start().starts_with('#') {
                    start -= 1;
                }
                if start > 0 && lines[start - 1].trim().is_empty() {
                    start -= 1;
                }
                // Trailing comments and blank lines that precede the next table stay with it.
                let mut stop = end;
                while stop > i + 1 && {
                    let l = lines[stop - 1].trim_start();
                    l.starts_with('#') || l.is_empty()
                } {
                    stop -= 1;
                }
                let mut out: String = lines[..start].concat();
                out.push_str(&lines[stop..].concat());
                return Some(out);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    None
}

/// Writes `text` to `path` through a temporary file and a rename, keeping the old file as
/// `<path>.bak`.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut bak = path.as_os_str().to_owned();
    bak.push(".bak");
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::copy(path, &bak)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const A: &str = "0742091c-19cd-4658-9b4f-5320da160f45";
    const B: &str = "566bfe72-1f85-4e7d-9c0a-424e6c3b29f3";

    fn stream(id: &str) -> StreamConfig {
        let text = format!(
            "[[rtsp_streams]]\nguid = \"{id}\"\nurl = \"rtsp://u:p@cam/1\"\noutput_types = [\"mse\", \"hls\"]\n"
        );
        Config::from_str_at(&text, Path::new("t.toml"))
            .expect("config")
            .streams
            .remove(0)
    }

    #[test]
    fn appended_streams_parse_back_and_removal_keeps_everything_else() {
        let original = format!(
            "# my cameras\n[api]\nenabled = true # keep me\n\n# the lobby\n[[rtsp_streams]]\nguid = \"{A}\"\nurl = \"rtsp://x/a\"\noutput_types = [\"mse\"]\n\n# next\n[cors]\nenabled = false\n"
        );
        let added = append_stream(&original, &stream(B)).expect("rtsp");
        let c = Config::from_str_at(&added, Path::new("t.toml")).expect("still valid");
        assert_eq!(c.streams.len(), 2);
        assert_eq!(c.streams[1], stream(B));
        assert!(added.starts_with(&original.trim_end().to_owned()));

        let without_b = remove_stream(&added, &Uuid::parse_str(B).expect("uuid")).expect("found");
        assert_eq!(without_b.trim_end(), original.trim_end());
        let without_a =
            remove_stream(&original, &Uuid::parse_str(A).expect("uuid")).expect("found");
        assert_eq!(
            without_a,
            "# my cameras\n[api]\nenabled = true # keep me\n\n# next\n[cors]\nenabled = false\n"
        );
        assert!(remove_stream(&original, &Uuid::nil()).is_none());
    }
}

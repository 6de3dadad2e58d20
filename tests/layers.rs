//! The dependency rule, checked on the source (docs/architecture.md explains it):
//!
//! - shared vocabulary (`media`, `events`, `wsproto`, `mp4`, `config`, `hub`) imports nothing
//!   above it;
//! - stages (`source`, `mse`, `hls`, `snapshot`, `webrtc`, `archive`, `webhooks`, `cluster`)
//!   import the vocabulary, never each other, `api` or `app`;
//! - `api` imports anything but `app`; `app` imports anything; nothing imports `app`;
//! - pure cores do no I/O and read no clock;
//! - library types stay behind their boundary files (retina in `source/rtsp.rs`, rust-s3 in
//!   `archive/s3.rs`, etcd-client in `cluster/etcd.rs`, openh264 and jpeg-encoder in
//!   `snapshot/h264.rs`, str0m in `webrtc/peer.rs`).
//!
//! A violation names the file, the line and the rule.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const VOCABULARY: &[&str] = &["media", "events", "wsproto", "mp4", "config", "hub"];

/// What each top-level module may import from the crate (besides itself).
fn allowed(module: &str) -> Option<BTreeSet<&'static str>> {
    let set = |v: &[&'static str]| v.iter().copied().collect::<BTreeSet<_>>();
    Some(match module {
        "media" | "events" => set(&[]),
        "wsproto" | "mp4" | "hub" => set(&["media"]),
        "config" => set(&["media", "events"]),
        "source" | "hls" => set(&["media", "config", "hub", "mp4"]),
        "mse" => set(&["media", "hub", "mp4", "wsproto"]),
        "snapshot" => set(&["media", "hub", "mp4"]),
        "webrtc" => set(&["media", "config", "hub", "mp4"]),
        "archive" => set(&["media", "config", "hub", "mp4", "events", "wsproto"]),
        "webhooks" => set(&["media", "config", "hub", "events"]),
        "cluster" => set(&["media", "config"]),
        "api" => {
            let mut s = set(VOCABULARY);
            s.extend([
                "source", "mse", "hls", "snapshot", "webrtc", "archive", "webhooks", "cluster",
            ]);
            s
        }
        "app" => return None, // anything
        _ => set(&[]),
    })
}

/// Files that must stay pure: no I/O, no clock, no runtime.
const PURE: &[&str] = &[
    "src/mp4/entry.rs",
    "src/mp4/fmp4.rs",
    "src/mp4/movie.rs",
    "src/mp4/segmenter.rs",
    "src/source/sps.rs",
    "src/source/reorder.rs",
    "src/source/timeline.rs",
    "src/source/clock.rs",
    "src/source/g711.rs",
    "src/source/pace.rs",
    "src/hls/playlist.rs",
    "src/snapshot/picture.rs",
    "src/webrtc/clock.rs",
    "src/webrtc/audio.rs",
    "src/webrtc/demux.rs",
    "src/hub/ring.rs",
    "src/hub/delay.rs",
    "src/hub/diagnostics.rs",
    "src/archive/index.rs",
    "src/archive/playback.rs",
    "src/events.rs",
    "src/wsproto/mod.rs",
    "src/wsproto/frame.rs",
    "src/cluster/placement.rs",
    "src/cluster/state.rs",
];

/// What a pure file may not mention.
const IMPURE: &[&str] = &[
    "tokio::",
    "std::fs",
    "std::net",
    "SystemTime",
    "Instant::now",
    "unix_ms_now",
    "reqwest",
    "std::thread",
];

/// Library crates and the one file each may be named in.
const BOUNDARIES: &[(&str, &[&str])] = &[
    ("retina::", &["src/source/rtsp.rs", "src/media.rs"]),
    ("s3::", &["src/archive/s3.rs"]),
    ("etcd_client::", &["src/cluster/etcd.rs"]),
    ("openh264::", &["src/snapshot/h264.rs"]),
    ("jpeg_encoder::", &["src/snapshot/h264.rs"]),
    ("str0m::", &["src/webrtc/peer.rs"]),
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/hls/store.rs` → `hls`, `src/media.rs` →
/// `media`); `None` for the crate roots.
fn module_of(rel: &str) -> Option<&str> {
    let rest = rel.strip_prefix("src/")?;
    match rest.split_once('/') {
        Some((dir, _)) => Some(dir),
        None => match rest.strip_suffix(".rs")? {
            "lib" | "main" => None,
            m => Some(m),
        },
    }
}

/// The code of a line, without its `//` comment (doc comments name other modules freely).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Crate modules a line names: `crate::x`, and `crate::{x, y::z}` groups.
fn crate_refs(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Whether `code` names the library path `lib` from its root (`s3::Bucket`), not a module of
/// ours of the same name (`super::s3::`, `self::s3::`) or a longer identifier (`mp4_s3::`).
fn names_crate(code: &str, lib: &str) -> bool {
    code.match_indices(lib).any(|(i, _)| {
        code[..i]
            .chars()
            .next_back()
            .is_none_or(|p| !(p.is_ascii_alphanumeric() || p == '_' || p == ':'))
    })
}

fn violations() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    files(&root.join("src"), &mut all);
    assert!(all.len() > 30, "found only {} source files", all.len());
    let mut found = Vec::new();
    for path in all {
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let module = module_of(&rel);
        let may = module.and_then(allowed);
        for (n, line) in text.lines().enumerate() {
            let c = code(line);
            let at = format!("{rel}:{}", n + 1);
            if let (Some(m), Some(may)) = (module, &may) {
                for r in crate_refs(c) {
                    if r != m && !may.contains(r.as_str()) {
                        found.push(format!("{at}: `{m}` may not import `{r}`: {}", line.trim()));
                    }
                }
            }
            if PURE.contains(&rel.as_str()) {
                for bad in IMPURE {
                    if c.contains(bad) {
                        found.push(format!(
                            "{at}: pure core names `{bad}` (no I/O, clock or runtime here): {}",
                            line.trim()
                        ));
                    }
                }
            }
            for (lib, homes) in BOUNDARIES {
                if names_crate(c, lib) && !homes.contains(&rel.as_str()) {
                    found.push(format!(
                        "{at}: `{lib}` outside its boundary file ({}): {}",
                        homes.join(", "),
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn stages_import_only_what_the_dependency_rule_allows() {
    let v = violations();
    assert!(v.is_empty(), "{} violation(s):\n{}", v.len(), v.join("\n"));
}

#[test]
fn the_checker_sees_what_it_checks() {
    // The parser itself: a grouped import, a path, and a comment that names a module.
    assert_eq!(
        crate_refs("use crate::{hub::StreamHub, media};"),
        vec!["hub", "media"]
    );
    assert_eq!(crate_refs("let x = crate::app::App::new();"), vec!["app"]);
    assert_eq!(crate_refs(code("// see crate::app")), Vec::<String>::new());
    assert_eq!(module_of("src/hls/store.rs"), Some("hls"));
    assert_eq!(module_of("src/media.rs"), Some("media"));
    assert_eq!(module_of("src/lib.rs"), None);
    assert!(names_crate("use retina::client::Session;", "retina::"));
    assert!(!names_crate("use self::s3::S3Store;", "s3::"));
    assert!(!names_crate("let x = rust_s3::Bucket;", "s3::"));
    // The rule: a stage may not import another stage, `api` or `app`.
    for (stage, other) in [("archive", "hls"), ("mse", "api"), ("hls", "app")] {
        assert!(allowed(stage).is_some_and(|s| !s.contains(other)));
    }
    assert!(allowed("api").is_some_and(|s| !s.contains("app")));
}

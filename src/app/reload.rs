//! Hot reload: re-read the configuration file (SIGHUP or `POST /config/reload`) and apply the
//! stream changes without touching anything else. Added streams start, removed ones stop,
//! changed ones restart; untouched streams and their viewers do not notice. Streams added with
//! `/enable_camera` are not in the file and are left alone. Settings that need a restart (ports,
//! `[hls]`, `[archive]` globals, `[cors]`, `[auth]`, `[on_demand]`) are reported, not applied.
//! On a fleet node the file's changes go to the fleet's list instead (`fleet::reload`).

use tracing::{info, warn};
use uuid::Uuid;

use super::App;
use crate::api::registry::ReloadReport as Report;
use crate::config::{Config, ConfigError, StreamConfig};

/// The stream changes between two lists (pure).
pub fn diff(
    old: &[StreamConfig],
    new: &[StreamConfig],
) -> (Vec<Uuid>, Vec<StreamConfig>, Vec<StreamConfig>, usize) {
    let removed = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.id == o.id))
        .map(|o| o.id)
        .collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = 0;
    for n in new {
        match old.iter().find(|o| o.id == n.id) {
            None => added.push(n.clone()),
            Some(o) if o == n => unchanged += 1,
            Some(_) => changed.push(n.clone()),
        }
    }
    (removed, added, changed, unchanged)
}

/// Names of the sections that differ and need a restart.
fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let sections = |c: &Config| {
        serde_json::json!({
            "api": c.api, "video": c.video, "hls": c.hls, "archive": c.archive,
            "cors": c.cors, "on_demand": c.on_demand, "auth": c.auth, "cluster": c.cluster,
        })
    };
    let (a, b) = (sections(old), sections(new));
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| format!("[{k}]"))
        .collect();
    // Secrets are masked in the serialised form: compare them directly.
    fn secrets(c: &Config) -> Vec<&str> {
        let mut v: Vec<&str> = c.auth.tokens.iter().map(|t| t.token.as_str()).collect();
        v.extend([c.auth.jwt_secret.as_str(), c.auth.link_secret.as_str()]);
        v
    }
    if secrets(old) != secrets(new) && !out.iter().any(|s| s == "[auth]") {
        out.push("[auth]".into());
    }
    out
}

async fn stop(app: &App, id: &Uuid) {
    app.stop_stream(id).await;
    if let Some(a) = app.archive() {
        a.wait_recorder(id).await;
    }
}

async fn start(app: &App, s: StreamConfig) -> bool {
    if let Some(a) = app.archive() {
        a.update_stream(&s).await;
    }
    app.start_configured_stream(s)
}

/// Re-reads the file and applies the stream changes.
pub async fn reload(app: &App) -> Result<Report, ConfigError> {
    let new = Config::load(&app.config.path)?;
    #[cfg(feature = "cluster")]
    if let Some(cluster) = app.cluster.get() {
        let mut report = Report {
            restart_required: restart_required(&app.config, &new),
            warnings: new.warnings.clone(),
            ..Report::default()
        };
        super::fleet::reload(app, cluster, &new, &mut report).await;
        log(&report);
        return Ok(report);
    }
    let old_streams = app.configured_streams();
    let (removed, added, changed, unchanged) = diff(&old_streams, &new.streams);
    let mut report = Report {
        unchanged,
        restart_required: restart_required(&app.config, &new),
        warnings: new.warnings.clone(),
        ..Report::default()
    };
    for id in removed {
        stop(app, &id).await;
        report.removed.push(id);
    }
    for s in changed {
        let id = s.id;
        stop(app, &id).await;
        start(app, s).await;
        report.restarted.push(id);
    }
    for s in added {
        let id = s.id;
        if start(app, s).await {
            report.added.push(id);
        } else {
            report.skipped.push(id);
        }
    }
    log(&report);
    Ok(report)
}

fn log(report: &Report) {
    info!(
        added = report.added.len(),
        removed = report.removed.len(),
        restarted = report.restarted.len(),
        unchanged = report.unchanged,
        "configuration reloaded"
    );
    if !report.restart_required.is_empty() {
        warn!(
            sections = %report.restart_required.join(", "),
            "these settings changed but take effect only after a restart"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Config {
        Config::from_str_at(text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn diff_sorts_streams_into_added_removed_changed_and_unchanged() {
        let a = "0742091c-19cd-4658-9b4f-5320da160f45";
        let b = "566bfe72-1f85-4e7d-9c0a-424e6c3b29f3";
        let c = "13bf3e5c-d537-4f10-98e8-9d0afca8b070";
        let s = |id: &str, url: &str| {
            format!(
                "[[rtsp_streams]]\nguid = \"{id}\"\nurl = \"{url}\"\noutput_types = [\"mse\"]\n"
            )
        };
        let old = conf(&(s(a, "rtsp://x/1") + &s(b, "rtsp://x/2")));
        let new = conf(&(s(a, "rtsp://x/1") + &s(b, "rtsp://x/3") + &s(c, "rtsp://x/4")));
        let (removed, added, changed, unchanged) = diff(&old.streams, &new.streams);
        assert!(removed.is_empty());
        assert_eq!(
            added.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(),
            vec![c]
        );
        assert_eq!(
            changed.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(),
            vec![b]
        );
        assert_eq!(unchanged, 1);
        let (removed, ..) = diff(&new.streams, &old.streams);
        assert_eq!(
            removed.iter().map(Uuid::to_string).collect::<Vec<_>>(),
            vec![c]
        );
        let moved = conf(&(s(a, "rtsp://x/1") + "[hls]\nms_per_segment = 3000\n"));
        assert_eq!(restart_required(&old, &moved), vec!["[hls]".to_owned()]);
    }
}

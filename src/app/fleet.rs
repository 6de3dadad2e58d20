//! This node as the fleet sees it: [`crate::cluster::Local`] over the registry of streams.
//!
//! Belongs here: running, promoting and stopping a camera on the fleet's word. Does not belong
//! here: deciding (`cluster::state`), etcd (`cluster::etcd`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{info, warn};
use uuid::Uuid;

use super::App;
use crate::api::registry::ReloadReport;
use crate::archive::index::EndReason;
use crate::cluster::{state, Role};
use crate::config::{Config, SourceSpec, StreamConfig};

impl crate::cluster::Local for App {
    fn file_cameras(&self) -> Vec<StreamConfig> {
        self.file_streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn local(&self) -> BTreeMap<Uuid, state::Local> {
        self.streams()
            .iter()
            .map(|(id, r)| {
                let health = r.upstream.hub.health();
                (
                    *id,
                    state::Local {
                        recording: r.recording,
                        online: health.online,
                        last_error: health.last_error,
                        following: r.following.clone(),
                    },
                )
            })
            .collect()
    }

    fn run(&self, config: StreamConfig, role: Role) -> BoxFuture<'_, ()> {
        async move {
            let id = config.id;
            let record = role == Role::Owner;
            let (source, on_demand, following) = match &role {
                Role::Owner | Role::Standby => (config.source.clone(), config.on_demand, None),
                Role::Follower { node, ws_url } => (
                    SourceSpec::Peer {
                        url: ws_url.clone(),
                        node: node.clone(),
                    },
                    true,
                    Some(node.clone()),
                ),
            };
            // A camera whose settings changed (outputs, archive, URL in the fleet's list)
            // starts over with them; only its source moves in place.
            let changed = self
                .streams()
                .iter()
                .any(|(s, r)| *s == id && r.config != config);
            if changed {
                info!(stream = %id, "the camera's settings changed in the fleet's list: restarting it");
                crate::cluster::Local::stop(self, id).await;
            }
            if following.is_none() {
                if let Some(archive) = self.archive() {
                    archive.update_stream(&config).await;
                }
            }
            // A running stream changes role in place: viewers stay connected.
            let change = {
                let mut streams = self.streams();
                match streams.iter_mut().find(|(s, _)| *s == id) {
                    Some((_, r)) => {
                        r.following = following.clone();
                        let start = record && !r.recording;
                        let stop = !record && r.recording;
                        r.recording = record;
                        Some((Arc::clone(&r.upstream), start, stop))
                    }
                    None => None,
                }
            };
            // The recorder stops before the source changes (its file ends with the old
            // owner's frames); it starts after (from the new source's first keyframe).
            if let (Some((_, _, true)), Some(archive)) = (&change, self.archive()) {
                archive.stop_recording(&id, EndReason::Handoff).await;
            }
            if let Some((up, _, _)) = &change {
                up.switch(source.clone(), on_demand).await;
            }
            match (change, self.archive()) {
                (Some((up, true, _)), Some(archive)) => {
                    archive.record(&config, Arc::clone(&up.hub));
                }
                (Some(_), _) => {}
                (None, _) => {
                    self.start_as(config, false, record, Some((source, on_demand)));
                    if let Some((_, r)) = self.streams().iter_mut().find(|(s, _)| *s == id) {
                        r.following = following;
                    }
                }
            }
        }
        .boxed()
    }

    fn note_failover(&self, id: Uuid) {
        if let Some(a) = self.archive() {
            a.note_takeover_after_failure(&id);
        }
    }

    fn stop(&self, id: Uuid) -> BoxFuture<'_, ()> {
        async move {
            self.stop_stream(&id).await;
            if let Some(a) = self.archive() {
                a.wait_recorder(&id).await;
            }
        }
        .boxed()
    }
}

/// Hot reload on a fleet node: the file's camera changes go to the fleet's list in etcd (added
/// and changed cameras as records, removed ones disabled), so every node applies them within a
/// tick, whether or not its own file was edited yet; the cluster then runs each camera where it
/// is placed. Nothing starts or stops here directly.
pub(super) async fn reload(
    app: &App,
    cluster: &crate::cluster::Cluster,
    new: &Config,
    report: &mut ReloadReport,
) {
    let old = crate::cluster::Local::file_cameras(app);
    let (removed, added, changed, unchanged) = super::reload::diff(&old, &new.streams);
    report.unchanged = unchanged;
    *app.file_streams.lock().unwrap_or_else(|p| p.into_inner()) = new.streams.clone();
    for id in removed {
        match cluster.retire_file_camera(&id).await {
            Ok(()) => report.removed.push(id),
            Err(e) => report
                .warnings
                .push(format!("stream {id}: cannot remove it from the fleet: {e}")),
        }
    }
    let upserts = added
        .iter()
        .map(|s| (s, true))
        .chain(changed.iter().map(|s| (s, false)));
    for (s, is_new) in upserts {
        if !matches!(s.source, SourceSpec::Rtsp { .. }) {
            let w = format!(
                "stream {}: a local file is not shared through etcd; reload every node's file",
                s.id
            );
            warn!("{w}");
            report.warnings.push(w);
        }
        match cluster.add_camera(s).await {
            Ok(()) if is_new => report.added.push(s.id),
            Ok(()) => report.restarted.push(s.id),
            Err(e) => report
                .warnings
                .push(format!("stream {}: cannot add it to the fleet: {e}", s.id)),
        }
    }
}

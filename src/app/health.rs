//! The original's `[on_demand] health_check`: idle on-demand cameras are probed now and then,
//! so `/status` tells whether they would answer.
//!
//! Belongs here: the sweep, its pacing and its limits. Does not belong here: the probe itself
//! (`source::probe`), where results are shown (`hub` health, `api`).

use std::sync::Arc;
use std::time::Duration;

use super::upstream::Upstream;
use super::App;
use crate::config::SourceSpec;

/// The original's `[on_demand] health_check`: every `health_interval_ms`, probe the on-demand
/// streams that are idle (a running upstream is its own health signal), at most 8 probes at once
/// and 2 per camera, and record the result in the stream's health.
pub async fn monitor(app: Arc<App>) {
    const GLOBAL_PROBES: usize = 8;
    const PROBES_PER_HOST: usize = 2;
    let od = app.config.on_demand.clone();
    if !od.health_check {
        return;
    }
    let timeout = Duration::from_millis(od.health_timeout_ms as u64);
    let global = Arc::new(tokio::sync::Semaphore::new(GLOBAL_PROBES));
    let mut tick = tokio::time::interval(Duration::from_millis(od.health_interval_ms as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let idle: Vec<(SourceSpec, Arc<Upstream>)> = app
            .streams()
            .iter()
            .filter(|(_, r)| r.config.on_demand && !r.upstream.is_running())
            .map(|(_, r)| (r.config.source.clone(), Arc::clone(&r.upstream)))
            .collect();
        let mut per_host: std::collections::HashMap<String, Arc<tokio::sync::Semaphore>> =
            std::collections::HashMap::new();
        let mut sweep = tokio::task::JoinSet::new();
        for (source, up) in idle {
            let host = Arc::clone(
                per_host
                    .entry(crate::source::probe::host_key(&source))
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(PROBES_PER_HOST))),
            );
            let global = Arc::clone(&global);
            sweep.spawn(async move {
                let (Ok(_host), Ok(_global)) =
                    (host.acquire_owned().await, global.acquire_owned().await)
                else {
                    return;
                };
                if up.is_running() {
                    return;
                }
                let result = crate::source::probe::probe(&source, timeout).await;
                // A viewer may have started the upstream meanwhile: its frames decide then.
                if !up.is_running() {
                    up.hub.set_probed(result);
                }
            });
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = async { while sweep.join_next().await.is_some() {} } => {}
        }
    }
}

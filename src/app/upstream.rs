//! On-demand reference counting: a stream's upstream (its source task) runs while someone
//! wants it.
//!
//! Belongs here: starting, idling out and stopping one source task. Does not belong here:
//! which streams exist (`app`), what the source does (`source`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::SourceSpec;
use crate::hub::StreamHub;

/// A stream's upstream (its source task), started and stopped by demand.
///
/// A permanent stream runs from the start. An on-demand stream starts at its first viewer and
/// stops `idle` after the last one left, like the original's `[on_demand]`.
pub struct Upstream {
    pub hub: Arc<StreamHub>,
    idle: Duration,
    parent: CancellationToken,
    state: Mutex<UpState>,
}

struct UpState {
    /// Where frames come from (a fleet node switches between the camera and its owner).
    source: SourceSpec,
    on_demand: bool,
    running: Option<(CancellationToken, JoinHandle<()>)>,
    demand: usize,
    /// Bumped whenever demand changes, so a stale idle timer does nothing.
    idle_epoch: u64,
}

impl UpState {
    /// The source task exists and has not finished (a non-looping file ends by itself).
    fn alive(&self) -> bool {
        self.running.as_ref().is_some_and(|(_, t)| !t.is_finished())
    }
}

impl Upstream {
    /// A permanent upstream starts at once; an on-demand one at its first [`acquire`].
    ///
    /// [`acquire`]: Upstream::acquire
    pub fn new(
        source: SourceSpec,
        hub: Arc<StreamHub>,
        on_demand: bool,
        idle: Duration,
        parent: CancellationToken,
    ) -> Arc<Upstream> {
        let up = Arc::new(Upstream {
            hub,
            idle,
            parent,
            state: Mutex::new(UpState {
                source,
                on_demand,
                running: None,
                demand: 0,
                idle_epoch: 0,
            }),
        });
        if !on_demand {
            up.ensure_running(&mut up.state());
        }
        up
    }

    fn state(&self) -> std::sync::MutexGuard<'_, UpState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_running(&self, st: &mut UpState) {
        if st.alive() {
            return;
        }
        let cancel = self.parent.child_token();
        let task = tokio::spawn(crate::source::supervise(
            st.source.clone(),
            Arc::clone(&self.hub),
            cancel.clone(),
        ));
        st.running = Some((cancel, task));
    }

    /// Switches where frames come from (the camera, or the fleet node that owns it) without
    /// touching the hub, so viewers stay connected. A running source is stopped first (its
    /// last frames and its going offline happen before the new one starts), then the new one
    /// starts if it is permanent or wanted. `on_demand`: whether it runs only while wanted.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub async fn switch(&self, source: SourceSpec, on_demand: bool) {
        let old = {
            let mut st = self.state();
            if st.source == source && st.on_demand == on_demand {
                return;
            }
            st.source = source;
            st.on_demand = on_demand;
            st.running.take()
        };
        if let Some((cancel, task)) = old {
            cancel.cancel();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                warn!(stream = %self.hub.id, "source did not stop within 10 s");
            }
        }
        let mut st = self.state();
        if !st.on_demand || st.demand > 0 {
            self.ensure_running(&mut st);
        }
    }

    /// Whether the source task is running now.
    pub fn is_running(&self) -> bool {
        self.state().alive()
    }

    /// Registers a consumer; the upstream runs at least until the guard is dropped.
    pub fn acquire(self: &Arc<Self>) -> DemandGuard {
        let mut st = self.state();
        st.demand += 1;
        st.idle_epoch += 1;
        if st.on_demand {
            if !st.alive() {
                info!(stream = %self.hub.id, "on-demand upstream starting for a viewer");
            }
            self.ensure_running(&mut st);
        }
        DemandGuard(Arc::clone(self))
    }

    fn release(self: &Arc<Self>) {
        let mut st = self.state();
        st.demand = st.demand.saturating_sub(1);
        st.idle_epoch += 1;
        if !st.on_demand || st.demand > 0 {
            return;
        }
        let epoch = st.idle_epoch;
        let me = Arc::clone(self);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(me.idle).await;
            let mut st = me.state();
            if st.demand == 0 && st.idle_epoch == epoch {
                if let Some((cancel, _)) = st.running.take() {
                    info!(stream = %me.hub.id, idle_ms = me.idle.as_millis() as u64, "on-demand upstream stopped: no viewers");
                    cancel.cancel();
                }
            }
        });
    }

    /// Stops the source and waits for it (bounded).
    pub async fn stop(&self) {
        let running = self.state().running.take();
        if let Some((cancel, task)) = running {
            cancel.cancel();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                warn!(stream = %self.hub.id, "source did not stop within 10 s");
            }
        }
    }
}

/// Keeps an upstream wanted while it lives.
pub struct DemandGuard(Arc<Upstream>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.release();
    }
}

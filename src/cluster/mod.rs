//! The fleet (`[cluster]`, built with `--features cluster`): gateways that share their cameras
//! through etcd. Each node registers under a lease; each camera has one owner, held under the
//! owner's lease, placed by `placement`; `state` decides, this module acts.
//!
//! - **Failover**: a node that dies stops renewing its lease; etcd deletes its keys when the
//!   lease expires, and the nodes the cameras are now placed on claim them (within the lease
//!   TTL plus one reconcile tick).
//! - **Hand-off** (a node joins, or leaves with SIGTERM): the new node runs the camera first
//!   (standby, not recording), says it is ready, and only then does the owner let go; the new
//!   node then claims it and starts recording from its GOP cache.
//! - **Fencing**: a node that cannot renew its lease for `lease_ttl_s` − 1.5 s asks the other
//!   nodes whether they reach etcd (`/cluster/health`). If one does, this node is the one cut off: it stops its
//!   cameras before its lease can expire, so two nodes never record one camera. If none does,
//!   etcd itself is down: everything keeps running and nothing moves until it is back.
//!
//! Belongs here: the reconcile loop, leases, claims and releases. Does not belong here: the
//! etcd client (`etcd`, the only file that names it), running streams (`app`, through
//! [`Local`]), HTTP (`api`).

pub mod etcd;
pub mod placement;
pub mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::cluster::ClusterConfig;
use crate::config::StreamConfig;
use etcd::{Etcd, EtcdError, Keeper};
use state::{Action, Keys, NodeInfo, View};

/// How often the loop reads etcd and acts: cameras added anywhere show everywhere within it.
const TICK: Duration = Duration::from_millis(500);
/// The longest a graceful leave waits for its cameras to be taken over.
const LEAVE_WAIT: Duration = Duration::from_secs(15);

/// How a camera runs on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// From the camera, recording.
    Owner,
    /// From the camera, not recording (about to take over).
    Standby,
    /// Through the node that owns it, on demand (`ws_url`: its `/ws/live` for the camera).
    Follower { node: String, ws_url: String },
}

/// What the fleet needs from the node it runs on (`app` implements it).
pub trait Local: Send + Sync {
    /// The cameras of the configuration file (the same on every node).
    fn file_cameras(&self) -> Vec<StreamConfig>;
    /// What runs here, per camera.
    fn local(&self) -> BTreeMap<Uuid, state::Local>;
    /// Runs a camera here in `role`, switching a running one without dropping its viewers
    /// (its source changes; its recorder starts or stops).
    fn run(&self, config: StreamConfig, role: Role) -> BoxFuture<'_, ()>;
    /// Stops a camera here (its recorder closes its file).
    fn stop(&self, id: Uuid) -> BoxFuture<'_, ()>;
    /// A camera was just claimed from a node that died: its archive says so at the gap.
    fn note_failover(&self, id: Uuid);
}

/// The `/ws/live` URL of a camera on another node (its video server's advertised URL).
pub fn follow_url(node: &NodeInfo, id: &Uuid) -> String {
    let base = node.advertise_url.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.strip_prefix("http://").unwrap_or(base))
    };
    format!("{ws}/ws/live?stream_id={id}&catchup=0")
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(
        "another live node already uses node_id `{0}`: give each node its own `cluster.node_id`"
    )]
    DuplicateNode(String),
}

/// What `/cluster` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub node_id: String,
    /// etcd answered the last request.
    pub etcd_ok: bool,
    /// etcd is unreachable (from here, and from every node asked): nothing moves meanwhile.
    pub degraded: bool,
    /// This node could not prove its lease and stopped its cameras.
    pub fenced: bool,
    pub last_error: Option<String>,
    /// Unix ms of the last renewed lease.
    pub last_renewed_ms: Option<i64>,
    pub nodes: Vec<NodeStatus>,
    /// Every camera of the fleet: who owns it and what the owner sees of it.
    pub cameras: Vec<CameraStatus>,
}

/// One camera as `/cluster` lists it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CameraStatus {
    pub id: Uuid,
    /// The node that owns it (pulls and records it); none while it moves or nobody can.
    pub owner: Option<String>,
    /// The node placement puts it on.
    pub placed: Option<String>,
    /// Frames flow from the camera to its owner (as the owner last said).
    pub online: Option<bool>,
    /// Why the owner's last session with the camera ended (credentials removed).
    pub last_error: Option<String>,
}

/// One node as `/cluster` lists it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub advertise_url: String,
    pub advertise_api_url: String,
    pub started_ms: i64,
    /// Cameras it owns.
    pub streams: Vec<Uuid>,
}

/// This node's membership.
pub struct Cluster {
    cfg: ClusterConfig,
    keys: Keys,
    local: Arc<dyn Local>,
    etcd: tokio::sync::Mutex<Etcd>,
    status: Mutex<Status>,
    /// The last view read, for owners and peers.
    view: Mutex<View>,
    /// Cameras whose owner disappeared (lease expired) since the view before.
    orphaned: Mutex<std::collections::BTreeSet<Uuid>>,
    lease: std::sync::atomic::AtomicI64,
    /// Set on SIGTERM: cameras are handed off, nothing new is claimed.
    leaving: CancellationToken,
    wake: tokio::sync::Notify,
}

impl Cluster {
    /// Connects (retrying with backoff until `shutdown`), registers this node and starts the
    /// reconcile loop. Fails for a node id another live node uses.
    pub async fn join(
        cfg: ClusterConfig,
        local: Arc<dyn Local>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let mut delay = Duration::from_millis(250);
        let mut etcd = loop {
            match Etcd::connect(&cfg.etcd).await {
                Ok(e) => break e,
                Err(e) => {
                    warn!(endpoints = ?cfg.etcd, retry_in_ms = delay.as_millis() as u64, "etcd not reachable: {e}");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(e.into()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let keys = Keys {
            prefix: cfg.prefix.clone(),
        };
        let lease = register(&mut etcd, &cfg, &keys).await?;
        info!(node = %cfg.node_id, lease, "joined the cluster");
        let cluster = Arc::new(Cluster {
            status: Mutex::new(Status {
                node_id: cfg.node_id.clone(),
                etcd_ok: true,
                ..Status::default()
            }),
            keys,
            local,
            etcd: tokio::sync::Mutex::new(etcd),
            view: Mutex::new(View::default()),
            orphaned: Mutex::new(std::collections::BTreeSet::new()),
            lease: std::sync::atomic::AtomicI64::new(lease),
            leaving: CancellationToken::new(),
            wake: tokio::sync::Notify::new(),
            cfg,
        });
        tokio::spawn(Arc::clone(&cluster).run(shutdown));
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    fn lease(&self) -> i64 {
        self.lease.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What `/cluster` shows.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// The node that owns a camera, if any (from the last read).
    pub fn owner(&self, id: &Uuid) -> Option<NodeInfo> {
        let v = lock(&self.view);
        let held = v.owners.get(id)?;
        v.nodes.get(&held.node).cloned()
    }

    /// Adds a camera to the fleet's list (`/enable_camera`).
    pub async fn add_camera(&self, config: &StreamConfig) -> Result<(), EtcdError> {
        let Some(record) = state::CameraRecord::of(config) else {
            return Ok(());
        };
        let json = serde_json::to_vec(&record).unwrap_or_default();
        let mut etcd = self.etcd.lock().await;
        etcd.put(&self.keys.camera(&config.id), &json, None).await?;
        etcd.delete(&self.keys.disabled(&config.id)).await?;
        drop(etcd);
        self.wake.notify_one();
        Ok(())
    }

    /// Removes a camera from the fleet's list (`/disable_camera`); whether it was listed.
    pub async fn remove_camera(&self, id: &Uuid) -> Result<bool, EtcdError> {
        let in_file = self.local.file_cameras().iter().any(|c| c.id == *id);
        let listed = lock(&self.view).cameras.contains_key(id);
        let mut etcd = self.etcd.lock().await;
        etcd.delete(&self.keys.camera(id)).await?;
        if in_file {
            etcd.put(&self.keys.disabled(id), b"", None).await?;
        }
        drop(etcd);
        self.wake.notify_one();
        Ok(in_file || listed)
    }

    /// A camera taken out of the configuration file (hot reload): off the fleet's list on every
    /// node, including those whose file still has it.
    pub async fn retire_file_camera(&self, id: &Uuid) -> Result<(), EtcdError> {
        let mut etcd = self.etcd.lock().await;
        etcd.delete(&self.keys.camera(id)).await?;
        etcd.put(&self.keys.disabled(id), b"", None).await?;
        drop(etcd);
        self.wake.notify_one();
        Ok(())
    }

    /// A graceful leave (SIGTERM): this node stops being placed, waits (bounded) until the
    /// nodes its cameras move to run them, lets go, and revokes its lease.
    pub async fn leave(&self) {
        self.leaving.cancel();
        let key = self.keys.node(&self.cfg.node_id);
        let lease = self.lease();
        if let Err(e) = self.etcd.lock().await.delete_held(&key, lease).await {
            warn!("cannot leave the cluster gracefully: {e}");
            return;
        }
        info!("leaving the cluster: handing cameras off");
        let deadline = Instant::now() + LEAVE_WAIT;
        loop {
            self.wake.notify_one();
            let owned = lock(&self.view)
                .owners
                .values()
                .filter(|h| h.node == self.cfg.node_id)
                .count();
            if owned == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        if let Err(e) = self.etcd.lock().await.revoke(lease).await {
            warn!("cannot revoke the lease: {e}");
        }
        info!("left the cluster");
    }

    /// The reconcile loop: renew the lease, read the fleet, act; until shutdown.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let renew_every = Duration::from_millis(self.cfg.lease_ttl_s * 1000 / 3);
        let mut keeper: Option<Keeper> = None;
        let mut last_renew = Instant::now();
        let mut renewed_ok = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
                _ = self.wake.notified() => {}
            }
            if last_renew.elapsed() >= renew_every {
                last_renew = Instant::now();
                match self.renew(&mut keeper).await {
                    Ok(true) => renewed_ok = Instant::now(),
                    Ok(false) => {
                        // The lease is gone: whatever this node held went with it.
                        warn!("the lease expired; stopping owned cameras and joining again");
                        self.fence().await;
                        keeper = None;
                        if let Err(e) = self.rejoin().await {
                            self.note_error(&e.to_string());
                        } else {
                            renewed_ok = Instant::now();
                        }
                    }
                    Err(e) => self.note_error(&e.to_string()),
                }
            }
            let unproven = renewed_ok.elapsed()
                > Duration::from_millis(self.cfg.lease_ttl_s * 1000)
                    .saturating_sub(Duration::from_millis(1500));
            if unproven {
                self.on_unproven().await;
                continue;
            }
            if let Err(e) = self.reconcile().await {
                self.note_error(&e.to_string());
            }
        }
    }

    /// Renews the lease once: `Ok(false)` when etcd says it is gone.
    async fn renew(&self, keeper: &mut Option<Keeper>) -> Result<bool, EtcdError> {
        if keeper.is_none() {
            *keeper = Some(self.etcd.lock().await.keeper(self.lease()).await?);
        }
        let Some(k) = keeper.as_mut() else {
            return Ok(false);
        };
        match k.renew().await {
            Ok(ttl) => {
                let mut s = lock(&self.status);
                s.etcd_ok = true;
                s.degraded = false;
                s.fenced = false;
                s.last_renewed_ms = Some(crate::media::unix_ms_now());
                Ok(ttl > 0)
            }
            Err(e) => {
                *keeper = None;
                Err(e)
            }
        }
    }

    async fn rejoin(&self) -> Result<(), ClusterError> {
        let mut etcd = self.etcd.lock().await;
        let lease = register(&mut etcd, &self.cfg, &self.keys).await?;
        self.lease
            .store(lease, std::sync::atomic::Ordering::Relaxed);
        info!(lease, "joined the cluster again");
        Ok(())
    }

    fn note_error(&self, e: &str) {
        let mut s = lock(&self.status);
        if s.etcd_ok {
            warn!("etcd: {e}");
        }
        s.etcd_ok = false;
        s.last_error = Some(e.to_owned());
    }

    /// The lease could not be renewed for almost its TTL: fence if another node reaches etcd
    /// (this one is cut off), keep going if none does (etcd is down for everyone).
    async fn on_unproven(&self) {
        if lock(&self.status).fenced {
            return;
        }
        let peers: Vec<NodeInfo> = lock(&self.view)
            .nodes
            .values()
            .filter(|n| n.node_id != self.cfg.node_id)
            .cloned()
            .collect();
        let others_reach_etcd = peers_reach_etcd(&peers).await;
        if others_reach_etcd {
            warn!("cut off from etcd while other nodes reach it: stopping owned cameras before the lease can expire");
            self.fence().await;
        } else {
            let mut s = lock(&self.status);
            if !s.degraded {
                warn!("etcd is unreachable from every node: keeping cameras as they are until it is back");
            }
            s.degraded = true;
        }
    }

    /// Stops every camera this node runs as owner.
    async fn fence(&self) {
        let owned: Vec<Uuid> = self
            .local
            .local()
            .into_iter()
            .filter(|(_, l)| l.recording)
            .map(|(id, _)| id)
            .collect();
        for id in owned {
            self.local.stop(id).await;
        }
        lock(&self.status).fenced = true;
    }

    /// One read of the fleet, and the actions it calls for.
    async fn reconcile(&self) -> Result<(), EtcdError> {
        let entries = self.etcd.lock().await.list(&self.keys.all()).await?;
        let (mut view, bad) = state::parse(&self.keys, &entries);
        for key in bad {
            tracing::debug!(key, "ignored a malformed cluster key");
        }
        let file = self.local.file_cameras();
        self.publish(&view, &file);
        if self.leaving.is_cancelled() {
            view.nodes.remove(&self.cfg.node_id);
        }
        let local = self.local.local();
        let actions = state::decide(&self.cfg.node_id, &view, &file, &local);
        let health = state::health_updates(&self.cfg.node_id, &view, &local);
        // Cameras whose owner vanished without handing them to this node: taken over after a
        // failure, if this node claims them now.
        let orphaned: std::collections::BTreeSet<Uuid> = {
            let before = lock(&self.view);
            before
                .owners
                .iter()
                .filter(|(id, held)| {
                    held.node != self.cfg.node_id
                        && !view.owners.contains_key(*id)
                        && view.ready.get(*id) != Some(&self.cfg.node_id)
                })
                .map(|(id, _)| *id)
                .collect()
        };
        *lock(&self.view) = view;
        *lock(&self.orphaned) = orphaned;
        for a in actions {
            self.act(a).await?;
        }
        let lease = self.lease();
        for (id, h) in health {
            let json = serde_json::to_vec(&h).unwrap_or_default();
            let mut etcd = self.etcd.lock().await;
            etcd.put(&self.keys.health(&id), &json, Some(lease)).await?;
        }
        Ok(())
    }

    async fn act(&self, a: Action) -> Result<(), EtcdError> {
        let lease = self.lease();
        let me = self.cfg.node_id.as_bytes();
        match a {
            Action::Claim(config) => {
                if self.leaving.is_cancelled() {
                    return Ok(());
                }
                let id = config.id;
                let mut etcd = self.etcd.lock().await;
                if etcd.create(&self.keys.owner(&id), me, lease).await? {
                    let _ = etcd.delete_held(&self.keys.ready(&id), lease).await;
                    drop(etcd);
                    let failed = lock(&self.orphaned).contains(&id);
                    info!(stream = %id, after_failure = failed, "claimed");
                    self.local.run(config, Role::Owner).await;
                    if failed {
                        self.local.note_failover(id);
                    }
                }
            }
            Action::Own(config) => self.local.run(config, Role::Owner).await,
            Action::Standby(config) => {
                if !self.leaving.is_cancelled() {
                    self.local.run(config, Role::Standby).await;
                }
            }
            Action::Follow(config, owner) => {
                let role = Role::Follower {
                    ws_url: follow_url(&owner, &config.id),
                    node: owner.node_id,
                };
                self.local.run(config, role).await;
            }
            Action::Ready(id) => {
                let mut etcd = self.etcd.lock().await;
                etcd.put(&self.keys.ready(&id), me, Some(lease)).await?;
            }
            Action::Release { id, follow } => {
                // Viewers here stay: the stream goes on through the new owner (its recorder
                // closes its file first); without one it stops.
                match follow {
                    Some((config, to)) => {
                        let role = Role::Follower {
                            ws_url: follow_url(&to, &id),
                            node: to.node_id,
                        };
                        self.local.run(config, role).await;
                    }
                    None => self.local.stop(id).await,
                }
                let mut etcd = self.etcd.lock().await;
                etcd.delete_held(&self.keys.owner(&id), lease).await?;
                let _ = etcd.delete_held(&self.keys.health(&id), lease).await;
                drop(etcd);
                info!(stream = %id, "handed off");
            }
            Action::Stop(id) => self.local.stop(id).await,
        }
        Ok(())
    }

    /// Copies the view into what `/cluster` shows.
    fn publish(&self, view: &View, file: &[StreamConfig]) {
        let cameras = view.cameras(file);
        let placed = view.placement(&cameras);
        let cameras = cameras
            .keys()
            .map(|id| {
                let owner = view.owners.get(id).map(|h| h.node.clone());
                let health = view
                    .health
                    .get(id)
                    .filter(|h| owner.as_deref() == Some(h.node.as_str()));
                CameraStatus {
                    id: *id,
                    owner,
                    placed: placed.get(id).cloned(),
                    online: health.map(|h| h.online),
                    last_error: health.and_then(|h| h.last_error.clone()),
                }
            })
            .collect();
        let nodes = view
            .nodes
            .values()
            .map(|n| NodeStatus {
                node_id: n.node_id.clone(),
                advertise_url: n.advertise_url.clone(),
                advertise_api_url: n.advertise_api_url.clone(),
                started_ms: n.started_ms,
                streams: view
                    .owners
                    .iter()
                    .filter(|(_, h)| h.node == n.node_id)
                    .map(|(id, _)| *id)
                    .collect(),
            })
            .collect();
        let mut s = lock(&self.status);
        s.nodes = nodes;
        s.cameras = cameras;
        s.etcd_ok = true;
        s.last_error = None;
    }
}

/// Grants a lease and creates this node's key under it; refuses a node id in use.
async fn register(etcd: &mut Etcd, cfg: &ClusterConfig, keys: &Keys) -> Result<i64, ClusterError> {
    let lease = etcd.grant(cfg.lease_ttl_s).await?;
    let info = NodeInfo {
        node_id: cfg.node_id.clone(),
        advertise_url: cfg.advertise_url.clone(),
        advertise_api_url: cfg.advertise_api_url.clone(),
        started_ms: crate::media::unix_ms_now(),
    };
    let json = serde_json::to_vec(&info).unwrap_or_default();
    if !etcd.create(&keys.node(&cfg.node_id), &json, lease).await? {
        let _ = etcd.revoke(lease).await;
        return Err(ClusterError::DuplicateNode(cfg.node_id.clone()));
    }
    Ok(lease)
}

/// Whether any of `peers` says it reaches etcd (`GET /cluster/health` on its API server,
/// public even with `[auth]` on; bounded).
async fn peers_reach_etcd(peers: &[NodeInfo]) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
    else {
        return false;
    };
    let asks = peers.iter().map(|p| {
        let client = client.clone();
        let url = format!("{}/cluster/health", p.advertise_api_url);
        async move {
            let r = client.get(url).send().await.ok()?;
            let body = r.bytes().await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            v["etcd_ok"].as_bool()
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .any(|r| r == Some(true))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

//! The fleet as etcd holds it, and what one node should do about it. Pure: `parse` reads the
//! keys, `decide` compares them with what runs here; the runtime (`cluster::run`) does the I/O.
//!
//! Keys under the prefix (`/video-server` by default):
//! - `nodes/<node_id>`: a live node (JSON [`NodeInfo`]), under the node's lease;
//! - `owners/<uuid>`: the node that owns a camera (pulls it, records it), under its lease;
//! - `ready/<uuid>`: the node a camera is moving to, once it plays the camera (under its
//!   lease): the owner lets go only then (make-before-break);
//! - `cameras/<uuid>`: a camera added through the API (JSON `StreamConfig`);
//! - `disabled/<uuid>`: a camera of the configuration file disabled through the API;
//! - `health/<uuid>`: whether the owner gets frames from the camera, and its last error (JSON
//!   [`CameraHealth`], under the owner's lease, written when it changes), so every node's
//!   `/cluster` names a camera its owner cannot reach.
//!
//! A camera's place comes from `placement::assign` over the live nodes. A node claims a
//! camera that has no owner and is placed on it; it gives one up when the camera is placed
//! elsewhere and the new node is ready (or gone); it stops what it neither owns nor is taking
//! over.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::etcd::Entry;
use super::placement;
use crate::config::StreamConfig;

/// What a node says of itself in `nodes/<id>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub advertise_url: String,
    pub advertise_api_url: String,
    pub started_ms: i64,
}

/// A camera added through the API, as `cameras/<uuid>` holds it: the `/enable_camera` fields
/// with the URL whole (credentials included: secure etcd as you secure the config file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraRecord {
    pub id: Uuid,
    pub url: String,
    pub udp: bool,
    /// `output_types` as the API took them (`mse`, `hls`).
    pub output_types: Vec<String>,
    pub on_demand: bool,
}

impl CameraRecord {
    /// The record of an RTSP camera (`None` for a local file: those come from the file only).
    pub fn of(c: &StreamConfig) -> Option<CameraRecord> {
        let crate::config::SourceSpec::Rtsp { url, transport } = &c.source else {
            return None;
        };
        let names: &[(u8, &str)] = &[(2, "hls"), (3, "mse")];
        let output_types = c
            .outputs
            .codes
            .iter()
            .filter_map(|code| {
                names
                    .iter()
                    .find(|(n, _)| n == code)
                    .map(|(_, s)| (*s).to_owned())
            })
            .collect();
        Some(CameraRecord {
            id: c.id,
            url: url.clone(),
            udp: *transport == crate::config::Transport::Udp,
            output_types,
            on_demand: c.on_demand,
        })
    }

    /// The stream it describes; `None` if its output types do not parse.
    pub fn config(&self) -> Option<StreamConfig> {
        Some(StreamConfig {
            id: self.id,
            source: crate::config::SourceSpec::Rtsp {
                url: self.url.clone(),
                transport: if self.udp {
                    crate::config::Transport::Udp
                } else {
                    crate::config::Transport::Tcp
                },
            },
            outputs: crate::config::Outputs::parse(&self.output_types).ok()?,
            verbose: String::new(),
            on_demand: self.on_demand,
            archive: None,
        })
    }
}

/// What a camera's owner says of it in `health/<uuid>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraHealth {
    /// The node that wrote it (the owner).
    pub node: String,
    /// Frames flow from the camera.
    pub online: bool,
    /// Why the last session ended (credentials removed), if it did.
    pub last_error: Option<String>,
}

/// An owner key: which node, under which lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub node: String,
    pub lease: i64,
}

/// The fleet, parsed from one read of the prefix.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    pub nodes: BTreeMap<String, NodeInfo>,
    pub owners: BTreeMap<Uuid, Held>,
    pub ready: BTreeMap<Uuid, String>,
    pub cameras: BTreeMap<Uuid, StreamConfig>,
    pub disabled: BTreeSet<Uuid>,
    pub health: BTreeMap<Uuid, CameraHealth>,
}

/// Keys of the fleet under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn node(&self, id: &str) -> String {
        format!("{}/nodes/{id}", self.prefix)
    }
    pub fn owner(&self, cam: &Uuid) -> String {
        format!("{}/owners/{cam}", self.prefix)
    }
    pub fn ready(&self, cam: &Uuid) -> String {
        format!("{}/ready/{cam}", self.prefix)
    }
    pub fn camera(&self, cam: &Uuid) -> String {
        format!("{}/cameras/{cam}", self.prefix)
    }
    pub fn disabled(&self, cam: &Uuid) -> String {
        format!("{}/disabled/{cam}", self.prefix)
    }
    pub fn health(&self, cam: &Uuid) -> String {
        format!("{}/health/{cam}", self.prefix)
    }
}

/// Reads the entries under `keys.prefix`; malformed entries are skipped (and named).
pub fn parse(keys: &Keys, entries: &[Entry]) -> (View, Vec<String>) {
    let mut v = View::default();
    let mut bad = Vec::new();
    let root = keys.all();
    for e in entries {
        let Some(rest) = e.key.strip_prefix(&root) else {
            continue;
        };
        let Some((kind, name)) = rest.split_once('/') else {
            continue;
        };
        let text = String::from_utf8_lossy(&e.value);
        let id = Uuid::parse_str(name).ok();
        match (kind, id) {
            ("nodes", _) => match serde_json::from_str::<NodeInfo>(&text) {
                Ok(n) if n.node_id == name => {
                    v.nodes.insert(name.to_owned(), n);
                }
                _ => bad.push(e.key.clone()),
            },
            ("owners", Some(id)) => {
                v.owners.insert(
                    id,
                    Held {
                        node: text.into_owned(),
                        lease: e.lease,
                    },
                );
            }
            ("ready", Some(id)) => {
                v.ready.insert(id, text.into_owned());
            }
            ("cameras", Some(id)) => match serde_json::from_str::<CameraRecord>(&text)
                .ok()
                .and_then(|r| r.config())
            {
                Some(c) if c.id == id => {
                    v.cameras.insert(id, c);
                }
                _ => bad.push(e.key.clone()),
            },
            ("disabled", Some(id)) => {
                v.disabled.insert(id);
            }
            ("health", Some(id)) => match serde_json::from_str::<CameraHealth>(&text) {
                Ok(h) => {
                    v.health.insert(id, h);
                }
                Err(_) => bad.push(e.key.clone()),
            },
            _ => bad.push(e.key.clone()),
        }
    }
    (v, bad)
}

impl View {
    /// Every camera of the fleet: the file's, minus those disabled, plus those listed in etcd
    /// (added through the API or by a reload), which win on the same id; a record that says
    /// what the file says keeps the file's full settings (per-stream archive, verbose).
    pub fn cameras(&self, file: &[StreamConfig]) -> BTreeMap<Uuid, StreamConfig> {
        let mut out: BTreeMap<Uuid, StreamConfig> = file
            .iter()
            .filter(|c| !self.disabled.contains(&c.id))
            .map(|c| (c.id, c.clone()))
            .collect();
        for (id, c) in &self.cameras {
            let same_as_file = file
                .iter()
                .find(|f| f.id == *id)
                .filter(|f| CameraRecord::of(f).and_then(|r| r.config()).as_ref() == Some(c));
            out.insert(*id, same_as_file.unwrap_or(c).clone());
        }
        out
    }

    /// Where each camera belongs now.
    pub fn placement(&self, cameras: &BTreeMap<Uuid, StreamConfig>) -> BTreeMap<Uuid, String> {
        let ids: Vec<Uuid> = cameras.keys().copied().collect();
        let nodes: Vec<String> = self.nodes.keys().cloned().collect();
        placement::assign(&ids, &nodes)
    }
}

/// What runs on this node, per camera.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// Recording (as the owner).
    pub recording: bool,
    /// Frames flow.
    pub online: bool,
    /// Why the last session ended (credentials removed).
    pub last_error: Option<String>,
    /// Followed through this node (the camera's owner), not pulled from the camera.
    pub following: Option<String>,
}

/// One step for this node.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Take the owner key (placed here, nobody owns it); then run it as owner.
    Claim(StreamConfig),
    /// Owned here: make sure it runs from the camera and records.
    Own(StreamConfig),
    /// Placed here but still owned elsewhere: run it from the camera without recording, to
    /// take over at once.
    Standby(StreamConfig),
    /// The standby plays: tell the owner it may let go.
    Ready(Uuid),
    /// Owned here but placed elsewhere (and the new node is ready or gone), or no longer
    /// listed: stop recording and let go; keep serving viewers through the new owner if there
    /// is one.
    Release {
        id: Uuid,
        follow: Option<(StreamConfig, NodeInfo)>,
    },
    /// Owned by another live node: serve it here through that node (on demand: nothing flows
    /// until a viewer asks).
    Follow(StreamConfig, NodeInfo),
    /// Runs here but is neither owned, placed nor followed here (removed): stop it.
    Stop(Uuid),
}

/// The `health/<uuid>` records `me` should write: for each camera it owns and runs, what it
/// sees, where etcd holds something else (so a record is written when it changes, not per tick).
pub fn health_updates(
    me: &str,
    view: &View,
    local: &BTreeMap<Uuid, Local>,
) -> Vec<(Uuid, CameraHealth)> {
    view.owners
        .iter()
        .filter(|(_, held)| held.node == me)
        .filter_map(|(id, _)| {
            let l = local.get(id).filter(|l| l.following.is_none())?;
            let now = CameraHealth {
                node: me.to_owned(),
                online: l.online,
                last_error: l.last_error.clone(),
            };
            (view.health.get(id) != Some(&now)).then_some((*id, now))
        })
        .collect()
}

/// What `me` should do, given the fleet, the file's cameras and what runs here.
pub fn decide(
    me: &str,
    view: &View,
    file: &[StreamConfig],
    local: &BTreeMap<Uuid, Local>,
) -> Vec<Action> {
    let cameras = view.cameras(file);
    let placed = view.placement(&cameras);
    let mut out = Vec::new();
    for (id, config) in &cameras {
        let here = placed.get(id).map(String::as_str) == Some(me);
        let owner = view.owners.get(id).map(|h| h.node.as_str());
        let mine = local.get(id);
        match (owner, here) {
            (Some(o), _) if o == me => {
                let target = placed.get(id).and_then(|t| view.nodes.get(t));
                let target_ready = target.is_some_and(|t| view.ready.get(id) == Some(&t.node_id));
                if here || (target.is_some() && !target_ready) {
                    out.push(Action::Own(config.clone()));
                } else {
                    out.push(Action::Release {
                        id: *id,
                        follow: target.map(|t| (config.clone(), t.clone())),
                    });
                }
            }
            (None, true) => out.push(Action::Claim(config.clone())),
            (Some(_), true) => {
                out.push(Action::Standby(config.clone()));
                let plays = mine.is_some_and(|l| l.online && l.following.is_none());
                if plays && view.ready.get(id).map(String::as_str) != Some(me) {
                    out.push(Action::Ready(*id));
                }
            }
            (Some(o), false) => match view.nodes.get(o) {
                Some(n) if mine.and_then(|l| l.following.as_deref()) != Some(o) => {
                    out.push(Action::Follow(config.clone(), n.clone()));
                }
                _ => {}
            },
            // Nobody owns it yet: whatever runs here stays until someone does.
            (None, false) => {}
        }
    }
    // Cameras that left the list: the owner lets go of its key too; others stop them.
    for (id, held) in &view.owners {
        if held.node == me && !cameras.contains_key(id) {
            out.push(Action::Release {
                id: *id,
                follow: None,
            });
        }
    }
    for id in local.keys() {
        let released = view.owners.get(id).is_some_and(|h| h.node == me);
        if !cameras.contains_key(id) && !released {
            out.push(Action::Stop(*id));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Outputs, SourceSpec, Transport};

    const P: &str = "/vs";

    fn keys() -> Keys {
        Keys { prefix: P.into() }
    }

    fn cam(n: u128) -> StreamConfig {
        StreamConfig {
            id: Uuid::from_u128(n),
            source: SourceSpec::Rtsp {
                url: format!("rtsp://cam{n}/x"),
                transport: Transport::Tcp,
            },
            outputs: Outputs::parse(&["mse".to_owned()]).expect("mse"),
            verbose: String::new(),
            on_demand: false,
            archive: None,
        }
    }

    fn record(c: &StreamConfig) -> String {
        serde_json::to_string(&CameraRecord::of(c)).unwrap_or_default()
    }

    #[test]
    fn a_camera_record_round_trips_with_its_credentials() {
        let mut c = cam(5);
        c.source = SourceSpec::Rtsp {
            url: "rtsp://admin:secret@10.0.0.5/live".into(),
            transport: Transport::Udp,
        };
        let r = CameraRecord::of(&c).expect("rtsp");
        assert_eq!(r.url, "rtsp://admin:secret@10.0.0.5/live");
        assert_eq!(r.config(), Some(c));
    }

    fn entry(key: String, value: &str, lease: i64) -> Entry {
        Entry {
            key,
            value: value.as_bytes().to_vec(),
            lease,
        }
    }

    fn node(id: &str) -> Entry {
        let info = NodeInfo {
            node_id: id.into(),
            ..NodeInfo::default()
        };
        entry(
            keys().node(id),
            &serde_json::to_string(&info).unwrap_or_default(),
            1,
        )
    }

    #[test]
    fn parse_reads_every_kind_and_names_what_it_skips() {
        let k = keys();
        let c = cam(7);
        let entries = vec![
            node("a"),
            entry(k.owner(&c.id), "a", 11),
            entry(k.ready(&c.id), "b", 12),
            entry(k.camera(&c.id), &record(&c), 0),
            entry(k.disabled(&Uuid::from_u128(9)), "", 0),
            entry(format!("{P}/owners/not-a-uuid"), "a", 0),
            entry(format!("{P}/nodes/b"), "{not json", 0),
            entry("/other/nodes/a".into(), "", 0),
        ];
        let (v, bad) = parse(&k, &entries);
        assert_eq!(v.nodes.len(), 1);
        assert_eq!(
            v.owners[&c.id],
            Held {
                node: "a".into(),
                lease: 11
            }
        );
        assert_eq!(v.ready[&c.id], "b");
        assert_eq!(v.cameras[&c.id], c);
        assert!(v.disabled.contains(&Uuid::from_u128(9)));
        assert_eq!(
            bad,
            vec![format!("{P}/owners/not-a-uuid"), format!("{P}/nodes/b")]
        );
    }

    #[test]
    fn the_file_minus_disabled_plus_api_cameras() {
        let (v, _) = parse(
            &keys(),
            &[
                entry(keys().disabled(&Uuid::from_u128(1)), "", 0),
                entry(keys().camera(&Uuid::from_u128(3)), &record(&cam(3)), 0),
            ],
        );
        let all = v.cameras(&[cam(1), cam(2)]);
        assert_eq!(
            all.keys().map(|u| u.as_u128()).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn a_listed_camera_wins_over_the_file_but_keeps_the_files_settings_when_it_agrees() {
        let mut in_file = cam(4);
        in_file.verbose = "v".into();
        let mut moved = cam(4);
        moved.source = SourceSpec::Rtsp {
            url: "rtsp://elsewhere/x".into(),
            transport: Transport::Tcp,
        };
        let (same, _) = parse(
            &keys(),
            &[entry(keys().camera(&in_file.id), &record(&in_file), 0)],
        );
        assert_eq!(
            same.cameras(std::slice::from_ref(&in_file))[&in_file.id],
            in_file
        );
        let (other, _) = parse(
            &keys(),
            &[entry(keys().camera(&moved.id), &record(&moved), 0)],
        );
        let got = &other.cameras(std::slice::from_ref(&in_file))[&in_file.id];
        assert_eq!(got.source, moved.source);
        assert_eq!(got.verbose, "");
    }
    /// A three-node view with the owners given.
    fn view(owners: &[(u128, &str)]) -> View {
        let (mut v, _) = parse(&keys(), &[node("a"), node("b"), node("c")]);
        for (c, n) in owners {
            v.owners.insert(
                Uuid::from_u128(*c),
                Held {
                    node: (*n).into(),
                    lease: 1,
                },
            );
        }
        v
    }

    #[test]
    fn an_owner_writes_its_cameras_health_only_when_it_changes() {
        let v = view(&[(1, "a"), (2, "b")]);
        let running = |online: bool, err: Option<&str>| Local {
            recording: true,
            online,
            last_error: err.map(str::to_owned),
            following: None,
        };
        let here = BTreeMap::from([
            (Uuid::from_u128(1), running(false, Some("401 Unauthorized"))),
            (Uuid::from_u128(2), running(true, None)),
        ]);
        // Only the camera it owns, once.
        let ups = health_updates("a", &v, &here);
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].0, Uuid::from_u128(1));
        assert!(!ups[0].1.online);
        let mut written = v.clone();
        written.health.insert(ups[0].0, ups[0].1.clone());
        assert!(health_updates("a", &written, &here).is_empty());
        // It comes back: written again.
        let back = BTreeMap::from([(Uuid::from_u128(1), running(true, None))]);
        assert_eq!(health_updates("a", &written, &back).len(), 1);
        // A health key parses back.
        let json = serde_json::to_string(&ups[0].1).unwrap_or_default();
        let (parsed, bad) = parse(&keys(), &[entry(keys().health(&ups[0].0), &json, 1)]);
        assert!(bad.is_empty());
        assert_eq!(parsed.health[&ups[0].0], ups[0].1);
    }

    #[test]
    fn a_fresh_fleet_claims_every_camera_exactly_once() {
        let file: Vec<StreamConfig> = (1..=9).map(cam).collect();
        let v = view(&[]);
        let mut claimed = BTreeSet::new();
        for me in ["a", "b", "c"] {
            for a in decide(me, &v, &file, &BTreeMap::new()) {
                match a {
                    Action::Claim(c) => assert!(claimed.insert(c.id), "claimed twice"),
                    other => panic!("{me}: unexpected {other:?}"),
                }
            }
        }
        assert_eq!(claimed.len(), 9);
    }

    #[test]
    fn a_camera_moves_make_before_break() {
        let file = vec![cam(1)];
        let v0 = view(&[]);
        let placed = v0.placement(&v0.cameras(&file))[&Uuid::from_u128(1)].clone();
        let other = if placed == "a" { "b" } else { "a" };
        let id = Uuid::from_u128(1);
        // Owned by `other`, placed on `placed`: the owner keeps it, the new node stands by.
        let v = view(&[(1, other)]);
        assert_eq!(
            decide(other, &v, &file, &BTreeMap::new()),
            vec![Action::Own(cam(1))]
        );
        assert_eq!(
            decide(&placed, &v, &file, &BTreeMap::new()),
            vec![Action::Standby(cam(1))]
        );
        // Once its standby plays, the new node says so; then the owner lets go.
        let playing = BTreeMap::from([(
            id,
            Local {
                recording: false,
                online: true,
                ..Local::default()
            },
        )]);
        assert_eq!(
            decide(&placed, &v, &file, &playing),
            vec![Action::Standby(cam(1)), Action::Ready(id)]
        );
        let mut ready = v.clone();
        ready.ready.insert(id, placed.clone());
        let target = ready.nodes[&placed].clone();
        assert_eq!(
            decide(other, &ready, &file, &BTreeMap::new()),
            vec![Action::Release {
                id,
                follow: Some((cam(1), target))
            }]
        );
        // The owner key gone, the new node claims it.
        let mut free = ready.clone();
        free.owners.clear();
        assert_eq!(
            decide(&placed, &free, &file, &playing),
            vec![Action::Claim(cam(1))]
        );
        // The third node serves it through whichever node owns it.
        let third = ["a", "b", "c"]
            .into_iter()
            .find(|n| *n != placed && *n != other)
            .unwrap_or("c");
        assert_eq!(
            decide(third, &v, &file, &BTreeMap::new()),
            vec![Action::Follow(cam(1), v.nodes[other].clone())]
        );
        let following = BTreeMap::from([(
            id,
            Local {
                following: Some(other.to_owned()),
                ..Local::default()
            },
        )]);
        assert!(decide(third, &v, &file, &following).is_empty());
    }

    #[test]
    fn a_dead_nodes_cameras_are_claimed_and_an_owner_whose_target_is_gone_lets_go() {
        let file = vec![cam(1)];
        let id = Uuid::from_u128(1);
        // The owner's lease expired: its key is gone with its node key.
        let (mut v, _) = parse(&keys(), &[node("a"), node("b")]);
        let placed = v.placement(&v.cameras(&file))[&id].clone();
        assert_eq!(
            decide(&placed, &v, &file, &BTreeMap::new()),
            vec![Action::Claim(cam(1))]
        );
        // Owned by `a`, placed on a node that is not in the fleet any more: `a` keeps it
        // only while the target lives.
        v.owners.insert(
            id,
            Held {
                node: "a".into(),
                lease: 1,
            },
        );
        v.nodes.retain(|n, _| n == "a");
        assert_eq!(
            decide("a", &v, &file, &BTreeMap::new()),
            vec![Action::Own(cam(1))]
        );
    }

    #[test]
    fn what_runs_here_without_a_reason_stops() {
        let v = view(&[(1, "b")]);
        let file = vec![cam(1)];
        let local = BTreeMap::from([
            (Uuid::from_u128(1), Local::default()),
            (Uuid::from_u128(99), Local::default()),
        ]);
        let me = "c";
        let acts = decide(me, &v, &file, &local);
        assert!(
            acts.contains(&Action::Stop(Uuid::from_u128(99))),
            "{acts:?}"
        );
        // Owned here but no longer listed: released (the key goes too).
        let mut gone = v.clone();
        gone.owners.insert(
            Uuid::from_u128(42),
            Held {
                node: me.into(),
                lease: 1,
            },
        );
        let acts = decide(
            me,
            &gone,
            &file,
            &BTreeMap::from([(Uuid::from_u128(42), Local::default())]),
        );
        assert!(
            acts.contains(&Action::Release {
                id: Uuid::from_u128(42),
                follow: None
            }),
            "{acts:?}"
        );
        assert!(
            !acts.contains(&Action::Stop(Uuid::from_u128(42))),
            "{acts:?}"
        );
    }
}

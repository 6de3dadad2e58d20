//! The fleet against a real etcd (Debian's `etcd-server`, started per test on loopback) and
//! real cameras: every camera owned once and balanced, failover after SIGKILL within the
//! lease plus 3 s, the camera list shared through etcd, a 30 s etcd outage that moves nothing, and a
//! duplicate node id refused. What etcd holds is read back with `etcdctl`, independently of the
//! code under test.
#![cfg(feature = "cluster")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use common::s3_server::S3Server;
use common::*;

/// A single-member etcd on loopback with its own data directory.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        e.launch();
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn launch(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join("etcd.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start etcd (scripts/test installs etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.healthy() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `etcdctl endpoint health` (which answers on stderr).
    fn healthy(&self) -> bool {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.url(),
                "--command-timeout=1s",
                "endpoint",
                "health",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `etcdctl` against this server; its stdout.
    fn ctl(&self, args: &[&str]) -> String {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url(), "--command-timeout=2s"])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Owner of each camera, as etcd holds it.
    fn owners(&self) -> BTreeMap<String, String> {
        let out = self.ctl(&["get", "--prefix", "/video-server/owners/"]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter_map(|kv| {
                let cam = kv.first()?.rsplit('/').next()?.to_owned();
                Some((cam, (*kv.get(1)?).to_owned()))
            })
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay in front of etcd that the test can cut: one node reaches etcd only through it,
/// so cutting it partitions that node from etcd while the others still reach it.
struct Cuttable {
    port: u16,
    cut: tokio_util::sync::CancellationToken,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Cuttable {
    async fn start(to: u16) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = tokio_util::sync::CancellationToken::new();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (c, o) = (cut.clone(), std::sync::Arc::clone(&open));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(std::sync::atomic::Ordering::Relaxed) {
                    continue; // dropped: the node sees a connection reset
                }
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = c.cancelled() => {}
                    }
                });
            }
        });
        Cuttable { port, cut, open }
    }

    /// Drops every connection through it and refuses new ones.
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Relaxed);
        self.cut.cancel();
    }
}

/// Camera ids of the tests: 9 fixed UUIDs.
fn cameras(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("00000000-0000-4000-8000-{:012x}", 0xc0 + i))
        .collect()
}

/// A fleet node: `[cluster]` on `etcd`, advertising its own ports, and the cameras.
async fn node(etcd: &Etcd, id: &str, ttl_s: u64, streams: &str) -> Gateway {
    node_via(&etcd.url(), id, ttl_s, streams).await
}

/// A fleet node reaching etcd at `url`.
async fn node_via(url: &str, id: &str, ttl_s: u64, streams: &str) -> Gateway {
    node_with(url, id, ttl_s, "", streams).await
}

/// A fleet node with more `[cluster]` keys (`cluster_extra`).
async fn node_with(url: &str, id: &str, ttl_s: u64, cluster_extra: &str, streams: &str) -> Gateway {
    Gateway::start_on("", |video, api| {
        format!(
            "[cluster]\netcd = [\"{url}\"]\nnode_id = \"{id}\"\nadvertise_url = \"http://127.0.0.1:{video}\"\nadvertise_api_url = \"http://127.0.0.1:{api}\"\nlease_ttl_s = {ttl_s}\n{cluster_extra}\n\n{streams}"
        )
    })
    .await
}

fn camera_streams(cam: &Camera, ids: &[String]) -> String {
    ids.iter()
        .map(|id| rtsp_stream(id, &cam.url("h264"), "\"mse\"", ""))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn cluster_view(gw: &Gateway) -> serde_json::Value {
    get(gw.api, "/cluster").await.json()
}

/// Waits until etcd holds an owner for every camera of `ids`, each on one of `nodes`.
async fn settled(
    etcd: &Etcd,
    ids: &[String],
    nodes: &[&str],
    within: Duration,
) -> BTreeMap<String, String> {
    wait_for(within, "every camera owned by a live node", || async {
        let o = etcd.owners();
        let all = ids
            .iter()
            .all(|c| o.get(c).is_some_and(|n| nodes.contains(&n.as_str())));
        all.then_some(o)
    })
    .await
}

/// Waits until every node lists every camera (its own, and the others' it follows).
async fn listed_everywhere(gws: &BTreeMap<&str, &Gateway>, ids: &[String], within: Duration) {
    wait_for(within, "every camera listed on every node", || async {
        for gw in gws.values() {
            let st = gw.status().await;
            if !ids.iter().all(|id| st["streams"][id].is_object()) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Waits until each camera is online on the node that owns it.
async fn online_on_owners(
    gws: &BTreeMap<&str, &Gateway>,
    owners: &BTreeMap<String, String>,
    within: Duration,
) {
    wait_for(within, "every camera online on its owner", || async {
        for (cam, node) in owners {
            let gw = gws.get(node.as_str())?;
            let st = gw.status().await;
            if st["streams"][cam]["online"] != true {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_own_nine_cameras_once_balanced_and_each_plays_on_its_owner() {
    let cam = Camera::start(Auth::None);
    let etcd = Etcd::start();
    let ids = cameras(9);
    let streams = camera_streams(&cam, &ids);
    let a = node(&etcd, "a", 5, &streams).await;
    let b = node(&etcd, "b", 5, &streams).await;
    let c = node(&etcd, "c", 5, &streams).await;
    let owners = settled(&etcd, &ids, &["a", "b", "c"], Duration::from_secs(30)).await;
    // Give late claims time to show a second owner if there were one: there is not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(etcd.owners(), owners, "ownership settled");
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for n in owners.values() {
        *load.entry(n.as_str()).or_default() += 1;
    }
    assert_eq!(load.values().sum::<usize>(), 9);
    assert!(
        load.values().all(|&l| l <= 4),
        "balance within one camera: {load:?}"
    );

    let gws: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b), ("c", &c)].into();
    online_on_owners(&gws, &owners, Duration::from_secs(30)).await;
    listed_everywhere(&gws, &ids, Duration::from_secs(10)).await;
    // Each node pulls exactly the cameras it owns; the others are listed too, followed
    // through their owners on demand (idle without viewers).
    for (name, gw) in &gws {
        let st = gw.status().await;
        for (cam_id, owner) in &owners {
            let s = &st["streams"][cam_id];
            assert!(s.is_object(), "node {name} lists {cam_id}");
            assert_eq!(
                s["streaming"] == true,
                owner == name,
                "node {name}, {cam_id}: {s}"
            );
        }
    }
    // A viewer of every camera on its owner decodes video.
    for (cam_id, n) in &owners {
        let gw = gws[n.as_str()];
        let mut ws = ws_connect(&gw.ws_url(cam_id, "")).await;
        let mut cap = Capture::default();
        collect(&mut ws, &mut cap, 3, Duration::from_secs(20)).await;
        assert!(cap.fragments() >= 3, "{cam_id} on {n}");
        let path = gw.dir.path().join(format!("{cam_id}.mp4"));
        cap.write(&path);
        let p = probe(&path);
        assert!(p.decode_errors.is_empty(), "{cam_id}: {}", p.decode_errors);
        assert!(p.video_frames >= 3);
    }
    // Through a node that does not own it: one upstream to the owner, fanned out here.
    let (cam_id, owner) = owners.iter().next().expect("a camera");
    let (other_name, other) = gws
        .iter()
        .find(|(n, _)| **n != owner.as_str())
        .expect("another node");
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(ws_connect(&other.ws_url(cam_id, "")).await);
    }
    for ws in &mut viewers {
        let mut cap = Capture::default();
        collect(ws, &mut cap, 10, Duration::from_secs(20)).await;
        assert!(cap.fragments() >= 10, "{cam_id} through {other_name}");
        let path = other.dir.path().join(format!("via-{cam_id}.mp4"));
        cap.write(&path);
        let p = probe(&path);
        assert!(
            p.decode_errors.is_empty(),
            "{cam_id} via {other_name}: {}",
            p.decode_errors
        );
    }
    let owner_gw = gws[owner.as_str()];
    let owner_status = owner_gw.status().await;
    assert_eq!(
        owner_status["streams"][cam_id]["viewers"], 1,
        "three viewers on {other_name} cost the owner one: {owner_status}"
    );
    // /status names the node that pulls each camera; /metrics carries the node label.
    for (name, gw) in &gws {
        let st = gw.status().await;
        for (cam_id, owner) in &owners {
            assert_eq!(
                st["streams"][cam_id]["node"],
                owner.as_str(),
                "{name}: {cam_id}"
            );
        }
        let m = get(gw.api, "/metrics").await.text();
        assert!(
            m.contains(&format!("node=\"{name}\"")),
            "{name}: no node label"
        );
    }
    // /cluster on every node lists the three nodes and who owns what.
    for gw in gws.values() {
        let v = cluster_view(gw).await;
        assert_eq!(v["enabled"], true);
        assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3), "{v}");
        let listed: usize = v["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .map(|x| x["streams"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(listed, 9, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_cameras_play_on_the_survivors_within_the_lease_plus_3_s() {
    let cam = Camera::start(Auth::None);
    let etcd = Etcd::start();
    let ids = cameras(6);
    let streams = camera_streams(&cam, &ids);
    let ttl = 3;
    let a = node(&etcd, "a", ttl, &streams).await;
    let b = node(&etcd, "b", ttl, &streams).await;
    let mut c = node(&etcd, "c", ttl, &streams).await;
    let owners = settled(&etcd, &ids, &["a", "b", "c"], Duration::from_secs(30)).await;
    let gws: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b), ("c", &c)].into();
    online_on_owners(&gws, &owners, Duration::from_secs(30)).await;
    let dead: Vec<String> = owners
        .iter()
        .filter(|(_, n)| n.as_str() == "c")
        .map(|(c, _)| c.clone())
        .collect();
    assert!(!dead.is_empty(), "c owns cameras: {owners:?}");

    c.kill();
    let killed = Instant::now();
    let after = settled(&etcd, &ids, &["a", "b"], Duration::from_secs(ttl + 3)).await;
    let claimed_s = killed.elapsed().as_secs_f64();
    let survivors: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b)].into();
    online_on_owners(&survivors, &after, Duration::from_secs(ttl + 3)).await;
    let playing_s = killed.elapsed().as_secs_f64();
    eprintln!(
        "failover: claimed after {claimed_s:.2} s, playing after {playing_s:.2} s (lease {ttl} s)"
    );
    assert!(
        playing_s <= (ttl + 3) as f64,
        "the dead node's cameras played again after {playing_s:.2} s"
    );
    // Cameras the survivors owned did not move.
    for (cam_id, n) in &owners {
        if n != "c" {
            assert_eq!(&after[cam_id], n, "{cam_id} moved");
        }
    }
    // Viewers on a survivor get video of a camera that was on the dead node.
    let moved = &dead[0];
    let gw = survivors[after[moved].as_str()];
    let mut ws = ws_connect(&gw.ws_url(moved, "")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 3, Duration::from_secs(20)).await;
    assert!(cap.fragments() >= 3);
}

/// Watches a camera and notes when each fragment arrives, until `stop`.
fn watch_arrivals(
    url: String,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut ws = ws_connect(&url).await;
        let mut at = Vec::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // The wait since the last fragment counts too.
                    at.push(Instant::now());
                    return at;
                }
                m = ws.next() => match m {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                        if is_box(&b, b"moof") {
                            at.push(Instant::now());
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return at,
                },
            }
        }
    })
}

/// The longest wait between two arrivals.
fn longest_hole(at: &[Instant]) -> Duration {
    at.windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_move_make_before_break_when_a_node_joins_and_when_it_leaves() {
    let cam = Camera::start(Auth::None);
    let etcd = Etcd::start();
    let ids = cameras(4);
    let streams = camera_streams(&cam, &ids);
    let a = node(&etcd, "a", 5, &streams).await;
    let b = node(&etcd, "b", 5, &streams).await;
    let before = settled(&etcd, &ids, &["a", "b"], Duration::from_secs(30)).await;
    let gws: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b)].into();
    online_on_owners(&gws, &before, Duration::from_secs(30)).await;
    listed_everywhere(&gws, &ids, Duration::from_secs(10)).await;
    // Viewers of every camera on node a (owner of some, follower of the others).
    let stop = tokio_util::sync::CancellationToken::new();
    let viewers: Vec<_> = ids
        .iter()
        .map(|id| watch_arrivals(a.ws_url(id, ""), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A third node joins: it takes its share.
    let mut c = node(&etcd, "c", 5, &streams).await;
    let joined = wait_for(Duration::from_secs(30), "node c owns cameras", || async {
        let o = etcd.owners();
        let on_c = o.values().filter(|n| n.as_str() == "c").count();
        (on_c >= 1 && ids.iter().all(|i| o.contains_key(i))).then_some(o)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // And leaves with SIGTERM: its cameras go back before it stops.
    let status = tokio::task::spawn_blocking(move || {
        let s = c.terminate();
        (c, s)
    })
    .await
    .expect("join");
    assert!(
        status.1.is_some_and(|s| s.success()),
        "node c stopped cleanly"
    );
    let back = settled(&etcd, &ids, &["a", "b"], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    for (id, v) in ids.iter().zip(viewers) {
        let at = v.await.expect("viewer");
        let hole = longest_hole(&at[25.min(at.len())..]);
        eprintln!(
            "{id}: {} fragments, longest hole {hole:?} (owners {} → {} → {})",
            at.len(),
            before[id],
            joined[id],
            back[id]
        );
        assert!(
            hole <= Duration::from_millis(2500),
            "{id}: a hole of {hole:?}, more than one GOP (2 s)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_added_on_one_node_runs_on_its_owner_and_leaves_the_whole_fleet() {
    let cam = Camera::start(Auth::None);
    let etcd = Etcd::start();
    let a = node(&etcd, "a", 5, "").await;
    let b = node(&etcd, "b", 5, "").await;
    let id = "00000000-0000-4000-8000-0000000000ad";
    let body = format!(
        "{{\"guid\":\"{id}\",\"url\":\"{}\",\"output_types\":[\"mse\"]}}",
        cam.url("h264")
    );
    let r = http(
        a.api,
        "POST",
        "/enable_camera",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
    .expect("enable");
    assert_eq!(r.status, 200, "{}", r.text());
    // Listed in etcd at once, with its URL whole.
    assert!(etcd
        .ctl(&["get", &format!("/video-server/cameras/{id}")])
        .contains(&cam.url("h264")));
    let ids = vec![id.to_owned()];
    let owners = settled(&etcd, &ids, &["a", "b"], Duration::from_secs(5)).await;
    let gws: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b)].into();
    online_on_owners(&gws, &owners, Duration::from_secs(20)).await;

    // Disabled through the other node: it stops wherever it ran.
    let r = http(
        b.api,
        "POST",
        "/disable_camera",
        &[("Content-Type", "application/json")],
        format!("{{\"guid\":\"{id}\"}}").as_bytes(),
    )
    .await
    .expect("disable");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(
        Duration::from_secs(5),
        "the camera stopped on every node",
        || async {
            for gw in gws.values() {
                if gw.status().await["streams"].get(id).is_some() {
                    return None;
                }
            }
            (!etcd.owners().contains_key(id)).then_some(())
        },
    )
    .await;
}

/// Hot reload of one node's file changes the fleet's list: the other node, whose file is not
/// edited, follows it within a second, and nothing starts outside the fleet's placement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_on_one_node_changes_the_whole_fleets_list() {
    let cam = Camera::start(Auth::None);
    let etcd = Etcd::start();
    let ids = cameras(3);
    let file = camera_streams(&cam, &ids[..2]);
    let a = node(&etcd, "a", 5, &file).await;
    let b = node(&etcd, "b", 5, &file).await;
    let gws: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b)].into();
    let owners = settled(&etcd, &ids[..2], &["a", "b"], Duration::from_secs(10)).await;
    online_on_owners(&gws, &owners, Duration::from_secs(20)).await;

    // Node a's file loses the first camera and gains the third; b's file stays as it was.
    let text = std::fs::read_to_string(&a.conf).expect("read conf");
    let first = rtsp_stream(&ids[0], &cam.url("h264"), "\"mse\"", "");
    assert!(text.contains(&first));
    let edited = text.replace(
        &first,
        &rtsp_stream(&ids[2], &cam.url("h264"), "\"mse\"", ""),
    );
    std::fs::write(&a.conf, edited).expect("write conf");
    let r = http(a.api, "POST", "/config/reload", &[], b"")
        .await
        .expect("reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    assert_eq!(report["added"], serde_json::json!([ids[2]]), "{report}");
    assert_eq!(report["removed"], serde_json::json!([ids[0]]), "{report}");

    let now = &ids[1..];
    let owners = settled(&etcd, now, &["a", "b"], Duration::from_secs(5)).await;
    online_on_owners(&gws, &owners, Duration::from_secs(20)).await;
    wait_for(
        Duration::from_secs(5),
        "the removed camera stopped on both nodes and lost its owner",
        || async {
            for gw in gws.values() {
                if gw.status().await["streams"].get(&ids[0]).is_some() {
                    return None;
                }
            }
            (!etcd.owners().contains_key(&ids[0])).then_some(())
        },
    )
    .await;
    listed_everywhere(&gws, now, Duration::from_secs(5)).await;
    // Both nodes agree on who pulls each camera: its owner.
    let owners = etcd.owners();
    for gw in gws.values() {
        let st = gw.status().await;
        for id in now {
            assert_eq!(st["streams"][id]["node"], owners[id].as_str(), "{st}");
        }
    }
    assert_eq!(etcd.owners().len(), 2, "{:?}", etcd.owners());
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_keeps_every_camera_playing_and_moves_nothing() {
    let cam = Camera::start(Auth::None);
    let mut etcd = Etcd::start();
    let ids = cameras(4);
    // Each node records what it owns to its own disk.
    let recorded = |dir: &std::path::Path| {
        format!(
            "[archive]\nrecording = true\ndirectory = \"{d}\"\nms_per_file = 2000\n\n{}",
            ids.iter()
                .map(|id| rtsp_stream(
                    id,
                    &cam.url("h264"),
                    "\"mse\"",
                    &format!("archive = {{ recording = true, type = \"filesystem\", directory = \"{d}\", ms_per_file = 2000 }}", d = dir.display())
                ))
                .collect::<Vec<_>>()
                .join("\n"),
            d = dir.display()
        )
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let ttl = 3;
    let a = node(&etcd, "a", ttl, &recorded(dir_a.path())).await;
    let b = node(&etcd, "b", ttl, &recorded(dir_b.path())).await;
    let owners = settled(&etcd, &ids, &["a", "b"], Duration::from_secs(30)).await;
    let gws: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b)].into();
    online_on_owners(&gws, &owners, Duration::from_secs(30)).await;
    let written = |gw: &Gateway, id: &str| {
        let (gw, id) = (gw.api, id.to_owned());
        async move {
            get(gw, &format!("/archive/{id}/segments")).await.json()["recorder"]["files_written"]
                .as_u64()
                .unwrap_or(0)
        }
    };
    let mut before = BTreeMap::new();
    for (id, node) in &owners {
        before.insert(id.clone(), written(gws[node.as_str()], id).await);
    }

    // 30 s without etcd: every node sees it gone, and so does every peer; nothing stops.
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(ttl + 3)).await;
    for (name, gw) in &gws {
        let v = cluster_view(gw).await;
        assert_eq!(v["etcd_ok"], false, "{name}: {v}");
        assert_eq!(v["degraded"], true, "{name}: {v}");
        assert_eq!(v["fenced"], false, "{name}: {v}");
    }
    tokio::time::sleep(Duration::from_secs(30 - ttl - 3)).await;
    online_on_owners(&gws, &owners, Duration::from_secs(1)).await;
    // Every owner went on recording: about 15 files of 2 s each in 30 s.
    for (id, node) in &owners {
        let now = written(gws[node.as_str()], id).await;
        assert!(
            now >= before[id] + 10,
            "{id} on {node}: {} files before the outage, {now} after 30 s of it",
            before[id]
        );
    }

    etcd.launch();
    wait_for(
        Duration::from_secs(15),
        "the fleet healthy again",
        || async {
            for gw in gws.values() {
                if cluster_view(gw).await["etcd_ok"] != true {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(etcd.owners(), owners, "nothing moved");
    online_on_owners(&gws, &owners, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_etcd_stops_its_cameras_before_another_node_may_take_them() {
    let cam = Camera::start(Auth::None);
    let etcd = Etcd::start();
    let relay = Cuttable::start(etcd.client_port).await;
    let ids = cameras(6);
    let streams = camera_streams(&cam, &ids);
    let ttl = 4;
    let a = node_via(
        &format!("http://127.0.0.1:{}", relay.port),
        "a",
        ttl,
        &streams,
    )
    .await;
    let b = node(&etcd, "b", ttl, &streams).await;
    let c = node(&etcd, "c", ttl, &streams).await;
    let owners = settled(&etcd, &ids, &["a", "b", "c"], Duration::from_secs(30)).await;
    let gws: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b), ("c", &c)].into();
    online_on_owners(&gws, &owners, Duration::from_secs(30)).await;
    let on_a: Vec<String> = owners
        .iter()
        .filter(|(_, n)| n.as_str() == "a")
        .map(|(c, _)| c.clone())
        .collect();
    assert!(!on_a.is_empty(), "a owns cameras: {owners:?}");

    relay.cut();
    let cut = Instant::now();
    // a stops pulling (and recording) its cameras...
    wait_for(
        Duration::from_secs(ttl + 3),
        "a stops its cameras",
        || async {
            let st = a.status().await;
            on_a.iter()
                .all(|id| st["streams"][id]["streaming"] != true)
                .then_some(())
        },
    )
    .await;
    let fenced_s = cut.elapsed().as_secs_f64();
    assert_eq!(cluster_view(&a).await["fenced"], true);
    // ...before etcd lets anyone else own them.
    let after = settled(&etcd, &ids, &["b", "c"], Duration::from_secs(ttl + 3)).await;
    let taken_s = cut.elapsed().as_secs_f64();
    eprintln!("partition: a fenced after {fenced_s:.2} s, its cameras owned elsewhere after {taken_s:.2} s (lease {ttl} s)");
    assert!(
        fenced_s < taken_s,
        "fenced after {fenced_s:.2} s, taken over after {taken_s:.2} s"
    );
    let survivors: BTreeMap<&str, &Gateway> = [("b", &b), ("c", &c)].into();
    online_on_owners(&survivors, &after, Duration::from_secs(10)).await;
}

/// A camera recorded to the shared bucket in 2 s files, spooled in `spool`.
/// Two nodes, a and b, with `lease_ttl_s` = `ttl`, sharing one camera they record to one
/// bucket (each through its own spool), and what they need kept alive.
struct Recorded {
    _cam: Camera,
    _s3: S3Server,
    _spools: (tempfile::TempDir, tempfile::TempDir),
    etcd: Etcd,
    id: String,
    a: Gateway,
    b: Gateway,
}

impl Recorded {
    async fn start(ttl: u64) -> Recorded {
        let cam = Camera::start(Auth::None);
        let s3 = S3Server::start();
        let etcd = Etcd::start();
        let id = cameras(1).remove(0);
        let spools = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let a = node(
            &etcd,
            "a",
            ttl,
            &recorded_camera(&cam, &id, &s3, spools.0.path()),
        )
        .await;
        let b = node(
            &etcd,
            "b",
            ttl,
            &recorded_camera(&cam, &id, &s3, spools.1.path()),
        )
        .await;
        Recorded {
            _cam: cam,
            _s3: s3,
            _spools: spools,
            etcd,
            id,
            a,
            b,
        }
    }
}

fn recorded_camera(cam: &Camera, id: &str, s3: &S3Server, spool: &std::path::Path) -> String {
    format!(
        "[archive]\nrecording = true\nserving = true\ndirectory = \"{dir}\"\nms_per_file = 2000\n{minio}\n\n{stream}",
        dir = spool.display(),
        minio = s3.minio_settings("archive-bucket", "/var/archive_data"),
        stream = rtsp_stream(
            id,
            &cam.url("h264"),
            "\"mse\"",
            &format!(
                "archive = {{ recording = true, type = \"minio\", directory = \"{}\", ms_per_file = 2000 }}",
                spool.display()
            )
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_across_a_failover_shows_the_gap_as_node_failed_and_a_clip_crosses_it() {
    let Recorded {
        etcd,
        id,
        mut a,
        mut b,
        // Kept to the end of the test: they are the camera, the bucket and the spools.
        _cam,
        _s3,
        _spools,
    } = Recorded::start(3).await;
    let ids = vec![id.clone()];
    let owners = settled(&etcd, &ids, &["a", "b"], Duration::from_secs(30)).await;
    let (owner, survivor) = if owners[&id] == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // Two files uploaded by the first owner.
    wait_archive_segments(owner, &id, 2, true, Duration::from_secs(40)).await;
    owner.kill();
    // The survivor takes over, records, and sees the first owner's files in the bucket.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (segments, gap) = loop {
        let v = get(survivor.api, &format!("/archive/{id}/segments"))
            .await
            .json();
        let closed = v["segments"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|x| x["growing"] != true).count());
        let gap = v["gaps"]
            .as_array()
            .and_then(|g| g.iter().find(|x| x["cause"] == "node_failed").cloned());
        if closed >= 4 && gap.is_some() {
            break (v, gap);
        }
        assert!(
            Instant::now() < deadline,
            "no node_failed gap on the survivor: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let gap = gap.expect("gap");
    eprintln!("failover gap: {gap}");
    // The dead owner's files come with their facts (the bucket's index object), not a
    // nominal length and an unknown end.
    let ends: Vec<&str> = segments["segments"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|x| x["growing"] != true)
                .filter_map(|x| x["end_reason"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(!ends.contains(&"unknown"), "{ends:?}");
    assert!(ends.contains(&"node_failed"), "{ends:?}");
    // A clip from before the failover to after it: files of two nodes, one MP4 ffmpeg reads.
    let first = segments["segments"][0]["start_ms"].as_i64().expect("start");
    let last = segments["segments"]
        .as_array()
        .and_then(|s| s.iter().rev().find(|x| x["growing"] != true))
        .map(|x| x["start_ms"].as_i64().unwrap_or(0) + x["duration_ms"].as_i64().unwrap_or(0))
        .expect("last");
    clip_decodes(survivor, &id, first, last, "across-failover.mp4", 150).await;
}

/// Asks `gw` for a clip of `id` from `from_ms` to `to_ms` and checks ffmpeg decodes it without
/// an error and with at least `frames` video frames.
async fn clip_decodes(gw: &Gateway, id: &str, from_ms: i64, to_ms: i64, name: &str, frames: u64) {
    let r = get(
        gw.video,
        &format!(
            "/archive/{id}/clip.mp4?start={:.3}&end={:.3}",
            from_ms as f64 / 1000.0,
            to_ms as f64 / 1000.0
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let path = gw.dir.path().join(name);
    std::fs::write(&path, &r.body).expect("write");
    let p = probe(&path);
    assert!(p.decode_errors.is_empty(), "{}", p.decode_errors);
    assert!(p.video_frames >= frames, "{p:?}");
}

/// SIGTERM of a camera's owner hands it to another node make-before-break: its archive in the
/// bucket goes on with at most a second between the old owner's last file (ended `handoff`)
/// and the new owner's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_hand_off_leaves_at_most_a_second_out_of_the_archive() {
    let Recorded {
        etcd,
        id,
        mut a,
        mut b,
        // Kept to the end of the test: they are the camera, the bucket and the spools.
        _cam,
        _s3,
        _spools,
    } = Recorded::start(5).await;
    let ids = vec![id.clone()];
    let owners = settled(&etcd, &ids, &["a", "b"], Duration::from_secs(30)).await;
    let (owner, heir, heir_name) = if owners[&id] == "a" {
        (&mut a, &mut b, "b")
    } else {
        (&mut b, &mut a, "a")
    };
    wait_archive_segments(owner, &id, 2, true, Duration::from_secs(40)).await;
    let status = owner.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "the owner stopped cleanly"
    );
    assert_eq!(etcd.owners().get(&id).map(String::as_str), Some(heir_name));
    // The heir records on; the old owner's last file and the heir's first are both listed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let segments = loop {
        let v = get(heir.api, &format!("/archive/{id}/segments"))
            .await
            .json();
        let list = v["segments"].as_array().cloned().unwrap_or_default();
        let handed = list.iter().position(|x| x["end_reason"] == "handoff");
        if let Some(i) = handed {
            if list.get(i + 1).is_some_and(|x| x["growing"] != true) {
                break list;
            }
        }
        assert!(Instant::now() < deadline, "no file after the hand-off: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let i = segments
        .iter()
        .position(|x| x["end_reason"] == "handoff")
        .expect("handoff");
    let (last, next) = (&segments[i], &segments[i + 1]);
    let end = last["start_ms"].as_i64().unwrap_or(0) + last["duration_ms"].as_i64().unwrap_or(0);
    let hole_ms = next["start_ms"].as_i64().unwrap_or(i64::MAX) - end;
    eprintln!("archive across the hand-off: {hole_ms} ms between {last} and {next}");
    assert!(hole_ms <= 1000, "{hole_ms} ms out of the archive");
    // Every closed file keeps its facts (the heir merged the old owner's index object rather
    // than writing over it).
    let ends: Vec<&str> = segments
        .iter()
        .filter(|x| x["growing"] != true)
        .filter_map(|x| x["end_reason"].as_str())
        .collect();
    assert!(!ends.contains(&"unknown"), "{ends:?}");
    // A clip across the hand-off (files of both nodes) decodes.
    let from = segments[0]["start_ms"].as_i64().unwrap_or(0);
    let to = next["start_ms"].as_i64().unwrap_or(0) + next["duration_ms"].as_i64().unwrap_or(0);
    clip_decodes(heir, &id, from, to, "across-handoff.mp4", 100).await;
}

/// With `redirect = true`, HLS of a camera owned elsewhere is answered with a redirect to its
/// owner (token kept), a player that follows it gets the owner's playlist and segments, and the
/// redirecting node opens no upstream for it; its websocket viewers are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redirect_on_hls_goes_to_the_owner_and_websockets_stay() {
    let cam = Camera::start(Auth::None);
    let etcd = Etcd::start();
    let ids = cameras(2);
    let file = ids
        .iter()
        .map(|id| rtsp_stream(id, &cam.url("h264"), "\"mse\", \"hls\"", ""))
        .collect::<Vec<_>>()
        .join("\n");
    let a = node_with(&etcd.url(), "a", 5, "redirect = true", &file).await;
    let b = node_with(&etcd.url(), "b", 5, "redirect = true", &file).await;
    let gws: BTreeMap<&str, &Gateway> = [("a", &a), ("b", &b)].into();
    let owners = settled(&etcd, &ids, &["a", "b"], Duration::from_secs(10)).await;
    online_on_owners(&gws, &owners, Duration::from_secs(20)).await;
    for (cam_id, owner) in &owners {
        let (here, other) = if owner == "a" { (&a, &b) } else { (&b, &a) };
        // Asked of the node that does not own it: 307 to the owner, query kept.
        let path = format!("/hls/{cam_id}.m3u8?token=t");
        let r = http(other.video, "GET", &path, &[], b"")
            .await
            .expect("hls");
        assert_eq!(r.status, 307, "{}", r.text());
        assert_eq!(
            r.header("location"),
            Some(format!("http://{}{path}", here.video).as_str())
        );
        // A client that follows it plays from the owner.
        let body = reqwest::get(format!("http://{}/hls/{cam_id}.m3u8", other.video))
            .await
            .expect("follow")
            .text()
            .await
            .expect("playlist");
        assert!(body.contains("#EXTINF"), "{body}");
        // The owner answers for itself.
        let own = http(here.video, "GET", &format!("/hls/{cam_id}.m3u8"), &[], b"")
            .await
            .expect("own");
        assert_eq!(own.status, 200);
        // The redirecting node did not start the camera for it.
        assert_eq!(other.status().await["streams"][cam_id]["online"], false);
        // Websocket viewers through the other node still get video.
        let mut ws = ws_connect(&other.ws_url(cam_id, "")).await;
        let mut cap = Capture::default();
        collect(&mut ws, &mut cap, 5, Duration::from_secs(15)).await;
        assert!(
            cap.fragments() >= 5,
            "no video through the non-owner: {} fragments",
            cap.fragments()
        );
    }
}

/// A camera its owner cannot reach is named on every node's `/cluster`, with the owner's
/// error, not silently dark; a camera that plays is shown online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_its_owner_cannot_reach_is_reported_on_every_node() {
    let cam = Camera::start(Auth::None);
    let etcd = Etcd::start();
    let ids = cameras(2);
    let dead = format!("rtsp://127.0.0.1:{}/nobody", free_port());
    let file = rtsp_stream(&ids[0], &cam.url("h264"), "\"mse\"", "")
        + "\n"
        + &rtsp_stream(&ids[1], &dead, "\"mse\"", "");
    let a = node(&etcd, "a", 5, &file).await;
    let b = node(&etcd, "b", 5, &file).await;
    settled(&etcd, &ids, &["a", "b"], Duration::from_secs(10)).await;
    for gw in [&a, &b] {
        let seen = wait_for(
            Duration::from_secs(20),
            "both cameras' state from their owners",
            || async {
                let v = cluster_view(gw).await;
                let cams = v["cameras"].as_array()?.clone();
                let of = |id: &str| cams.iter().find(|c| c["id"] == id).cloned();
                let (good, bad) = (of(&ids[0])?, of(&ids[1])?);
                (good["online"] == true && bad["online"] == false && bad["last_error"].is_string())
                    .then_some((good, bad))
            },
        )
        .await;
        let (good, bad) = seen;
        assert!(good["owner"].is_string() && bad["owner"].is_string());
        assert_eq!(bad["owner"], bad["placed"], "{bad}");
        let why = bad["last_error"].as_str().unwrap_or_default();
        assert!(
            why.to_lowercase().contains("refused") || why.contains("connect"),
            "{why}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_nodes_can_still_ask_each_other_whether_they_reach_etcd() {
    let etcd = Etcd::start();
    let auth = "[auth]\nenabled = true\ntokens = [ { token = \"admin-token-0123456789\", streams = [\"*\"], actions = [\"admin\"] } ]\n\n";
    let url = etcd.url();
    let gw = Gateway::start_on("", |video, api| {
        format!(
            "{auth}[cluster]\netcd = [\"{url}\"]\nnode_id = \"a\"\nadvertise_url = \"http://127.0.0.1:{video}\"\nadvertise_api_url = \"http://127.0.0.1:{api}\"\n"
        )
    })
    .await;
    // The fencing question is public (a cut-off node has nobody's credential to send)...
    let v = wait_for(Duration::from_secs(10), "the node joined", || async {
        let v = get(gw.api, "/cluster/health").await.json();
        (v["enabled"] == true).then_some(v)
    })
    .await;
    assert_eq!(v["etcd_ok"], true, "{v}");
    // ...and says nothing else; the fleet's details need a credential.
    assert_eq!(v.as_object().map(|m| m.len()), Some(2), "{v}");
    assert_eq!(get(gw.api, "/cluster").await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_the_same_id_is_refused() {
    let etcd = Etcd::start();
    let _a = node(&etcd, "a", 5, "").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf.toml");
    let (v, api) = (free_port(), free_port());
    std::fs::write(
        &conf,
        format!(
            "[api]\nenabled = true\nhost = \"127.0.0.1\"\nport = {api}\n\n[video]\nhost = \"127.0.0.1\"\nport = {v}\n\n[cluster]\netcd = [\"{}\"]\nnode_id = \"a\"\nadvertise_url = \"http://127.0.0.1:{v}\"\nadvertise_api_url = \"http://127.0.0.1:{api}\"\n",
            etcd.url()
        ),
    )
    .expect("conf");
    let mut child = Command::new(env!("CARGO_BIN_EXE_video-server"))
        .arg("--conf")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "a duplicate node kept running");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success());
    assert!(err.contains("node_id `a`"), "{err}");
}

#[test]
fn check_names_the_key_of_a_bad_cluster_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf: PathBuf = dir.path().join("conf.toml");
    std::fs::write(
        &conf,
        "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nnode_id = \"a\"\nadvertise_url = \"http://10.0.0.1:8090\"\nadvertise_api_url = \"http://10.0.0.1:8091\"\nlease_ttl_s = 1\n",
    )
    .expect("conf");
    let out = Command::new(env!("CARGO_BIN_EXE_video-server"))
        .args(["check", "--conf"])
        .arg(&conf)
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cluster.lease_ttl_s") && err.contains("conf.toml:6:"),
        "{err}"
    );
}

#[test]
fn the_fleet_deployment_files_are_valid_and_agree() {
    let repo = repo();
    let check = |conf: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_video-server"))
            .args(["check", "--conf"])
            .arg(conf)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{}: {}",
            conf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The compose file's configuration, and the one in the Kubernetes ConfigMap.
    check(&repo.join("deploy/conf.cluster.toml"));
    let k8s = std::fs::read_to_string(repo.join("deploy/kubernetes/video-server.yaml"))
        .expect("manifest");
    let map: serde_yaml::Value = serde_yaml::Deserializer::from_str(&k8s)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML"))
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf.toml");
    std::fs::write(&conf, map["data"]["conf.toml"].as_str().expect("conf.toml")).expect("write");
    check(&conf);
    // The manifests against the Kubernetes API schemas; a wrong field is caught.
    let validate = |files: &[PathBuf]| {
        Command::new("kubernetes-validate")
            .arg("--strict")
            .args(files)
            .output()
            .expect("kubernetes-validate (scripts/test installs it)")
    };
    let manifests: Vec<PathBuf> = ["etcd.yaml", "minio.yaml", "video-server.yaml"]
        .iter()
        .map(|f| repo.join("deploy/kubernetes").join(f))
        .collect();
    let out = validate(&manifests);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, k8s.replace("replicas: 3", "replicaz: 3")).expect("write");
    assert!(
        !validate(&[bad]).status.success(),
        "the validator catches a wrong field"
    );
    // The readiness probe is the health route, on the API port the ConfigMap opens.
    assert!(k8s.contains("path: /health") && k8s.contains("port = 8091"));
    // docker-compose (Debian's) accepts the three-node file.
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.cluster.yaml", "config", "-q"])
        .current_dir(&repo)
        .output()
        .expect("docker-compose");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

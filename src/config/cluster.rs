//! `[cluster]` (ours, off unless present): this gateway as one node of a fleet that shares its
//! cameras through etcd and its archive through one S3 bucket. A configuration without the
//! section runs a single gateway exactly as before.
//!
//! ```toml
//! [cluster]
//! etcd = ["http://127.0.0.1:2379"]
//! node_id = "a"                                    # default: the host name
//! advertise_url = "http://node-a.example:8090"     # this node's video server, for other nodes
//! advertise_api_url = "http://node-a.example:8091" # this node's API server, for other nodes
//! lease_ttl_s = 5
//! ```
//!
//! `{node_id}` in the advertised URLs is replaced by the node id, so one file serves every
//! node of a StatefulSet or a compose project (`advertise_url = "http://{node_id}:8090"`).

use serde::{Deserialize, Serialize};

/// `[cluster]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawCluster {
    pub etcd: Vec<String>,
    pub node_id: Option<String>,
    pub advertise_url: String,
    pub advertise_api_url: String,
    pub lease_ttl_s: Option<u64>,
    /// Key prefix in etcd (several fleets may share one etcd).
    pub prefix: Option<String>,
    /// A node that does not own a live camera answers its HLS requests with a redirect (307)
    /// to the owner instead of serving them through itself. Websockets are always served
    /// through the node: browsers do not follow a redirect on a websocket handshake.
    pub redirect: bool,
}

/// `[cluster]` resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://host:port`).
    pub etcd: Vec<String>,
    pub node_id: String,
    pub advertise_url: String,
    pub advertise_api_url: String,
    pub lease_ttl_s: u64,
    pub prefix: String,
    pub redirect: bool,
}

/// The host name, for the default `node_id`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// A node id: what etcd keys and metric labels can carry as they are.
fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn http_url(v: &str) -> bool {
    url::Url::parse(v)
        .is_ok_and(|u| (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some())
}

/// Resolves `[cluster]`: `None` when the section is absent; an error is (key, message).
pub fn resolve(raw: Option<RawCluster>) -> Result<Option<ClusterConfig>, (String, String)> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let err = |key: &str, message: String| Err((format!("cluster.{key}"), message));
    if raw.etcd.is_empty() {
        return err(
            "etcd",
            "lists no endpoint (e.g. [\"http://127.0.0.1:2379\"])".into(),
        );
    }
    if let Some(bad) = raw.etcd.iter().find(|e| !http_url(e)) {
        return err(
            "etcd",
            format!("`{bad}` is not an http(s) URL of an etcd endpoint"),
        );
    }
    let node_id = raw.node_id.unwrap_or_else(host_name);
    if !valid_node_id(&node_id) {
        return err(
            "node_id",
            format!("`{node_id}`: use 1 to 63 letters, digits, `-`, `_` or `.`"),
        );
    }
    let advertise_url = raw.advertise_url.replace("{node_id}", &node_id);
    let advertise_api_url = raw.advertise_api_url.replace("{node_id}", &node_id);
    for (key, v) in [
        ("advertise_url", &advertise_url),
        ("advertise_api_url", &advertise_api_url),
    ] {
        if !http_url(v) {
            return err(
                key,
                format!("`{v}` must be the http(s) URL other nodes reach this node's server at"),
            );
        }
    }
    let lease_ttl_s = raw.lease_ttl_s.unwrap_or(5);
    if !(2..=60).contains(&lease_ttl_s) {
        return err(
            "lease_ttl_s",
            format!("{lease_ttl_s} s: a lease of 2 to 60 s (failover takes about this long)"),
        );
    }
    let prefix = raw.prefix.unwrap_or_else(|| "/video-server".to_owned());
    if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return err(
            "prefix",
            format!("`{prefix}`: a key prefix such as \"/video-server\""),
        );
    }
    Ok(Some(ClusterConfig {
        etcd: raw.etcd,
        node_id,
        advertise_url: advertise_url.trim_end_matches('/').to_owned(),
        advertise_api_url: advertise_api_url.trim_end_matches('/').to_owned(),
        lease_ttl_s,
        prefix,
        redirect: raw.redirect,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawCluster {
        RawCluster {
            etcd: vec!["http://127.0.0.1:2379".into()],
            node_id: Some("a".into()),
            advertise_url: "http://10.0.0.1:8090/".into(),
            advertise_api_url: "http://10.0.0.1:8091".into(),
            ..RawCluster::default()
        }
    }

    #[test]
    fn absent_is_off_and_defaults_fill_in() {
        assert_eq!(resolve(None), Ok(None));
        let c = resolve(Some(raw())).expect("valid").expect("on");
        assert_eq!(c.lease_ttl_s, 5);
        assert_eq!(c.prefix, "/video-server");
        assert_eq!(c.advertise_url, "http://10.0.0.1:8090");
        let mut r = raw();
        r.node_id = None;
        let c = resolve(Some(r)).expect("valid").expect("on");
        assert!(valid_node_id(&c.node_id), "{}", c.node_id);
    }

    #[test]
    fn the_node_id_fills_the_advertised_urls() {
        let mut r = raw();
        r.node_id = Some("video-server-2".into());
        r.advertise_url = "http://{node_id}.video-server:8090".into();
        r.advertise_api_url = "http://{node_id}.video-server:8091".into();
        let c = resolve(Some(r)).expect("valid").expect("on");
        assert_eq!(c.advertise_url, "http://video-server-2.video-server:8090");
        assert_eq!(
            c.advertise_api_url,
            "http://video-server-2.video-server:8091"
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        let key = |r: RawCluster| resolve(Some(r)).err().map(|(k, _)| k);
        let mut r = raw();
        r.etcd.clear();
        assert_eq!(key(r).as_deref(), Some("cluster.etcd"));
        let mut r = raw();
        r.etcd = vec!["127.0.0.1:2379".into()];
        assert_eq!(key(r).as_deref(), Some("cluster.etcd"));
        let mut r = raw();
        r.node_id = Some("a/b".into());
        assert_eq!(key(r).as_deref(), Some("cluster.node_id"));
        let mut r = raw();
        r.advertise_url = String::new();
        assert_eq!(key(r).as_deref(), Some("cluster.advertise_url"));
        let mut r = raw();
        r.lease_ttl_s = Some(1);
        assert_eq!(key(r).as_deref(), Some("cluster.lease_ttl_s"));
        let mut r = raw();
        r.prefix = Some("vs/".into());
        assert_eq!(key(r).as_deref(), Some("cluster.prefix"));
    }
}

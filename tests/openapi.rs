//! The OpenAPI document: it lists every route the servers have, and schemathesis (from PyPI)
//! fuzzes every documented operation on both servers of a live gateway without getting a 5xx.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{demo_stream, get, repo, Gateway};

/// Route paths registered in src/api/mod.rs (each `.add(GROUP, "path", …)`), in OpenAPI form
/// (`{x}` stays `{x}`).
fn registered_routes() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo().join("src/api/mod.rs")).expect("src/api/mod.rs");
    src.split(".add(")
        .skip(1)
        .filter_map(|rest| rest.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_routes_the_servers_have() {
    let gw = Gateway::start("").await;
    for addr in [gw.api, gw.video] {
        let r = get(addr, "/openapi.json").await;
        assert_eq!(r.status, 200);
        let doc = r.json();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            documented,
            registered_routes(),
            "src/api/mod.rs and src/api/openapi.json differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_every_documented_operation_finds_no_server_error() {
    let files = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(&format!(
        "[archive]\nrecording = true\nserving = true\ndirectory = \"{}\"\nms_per_file = 2000\n\
         [webrtc]\nlisten = \"127.0.0.1:0\"\n\
         {}archive = {{ recording = true, type = \"filesystem\" }}\n",
        files.path().display(),
        // With WebRTC on, the fuzzer's offers reach the SDP parser.
        demo_stream("\"mse\", \"hls\", \"webrtc\"")
    ))
    .await;
    gw.wait_online(common::DEMO, std::time::Duration::from_secs(20))
        .await;
    for (addr, other_server) in [(gw.api, "video"), (gw.video, "api")] {
        let url = format!("http://{addr}");
        // Its console entry point, through the Python on PATH (where scripts/test installs it).
        let out = Command::new("timeout")
            .arg("300")
            .args([
                "python3",
                "-c",
                "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            ])
            .args(["run", &format!("{url}/openapi.json"), "--url", &url])
            .args(["--exclude-tag", other_server])
            .args(["--checks", "not_a_server_error", "-n", "15"])
            .args([
                "--phases",
                "examples,coverage,fuzzing",
                "--request-timeout",
                "30",
            ])
            // Text serializers for the WHEP bodies (tests/openapi_hooks.py).
            .env("SCHEMATHESIS_HOOKS", "openapi_hooks")
            .env("PYTHONPATH", repo().join("tests"))
            .current_dir(files.path())
            .output()
            .expect("schemathesis (scripts/test installs it from PyPI)");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis found problems on {url}:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.contains("passed"), "{report}");
    }
    assert!(
        gw.log().lines().all(|l| !l.contains("panicked")),
        "the gateway panicked"
    );
}

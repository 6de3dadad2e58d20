//! A real S3-compatible server on loopback: s3s-fs (checks SigV4, stores objects as plain
//! files under its root, so tests can look at what arrived without going through the code
//! under test). `scripts/test` installs it into `~/.cargo/bin`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "videoserver";
pub const SECRET_KEY: &str = "videoserver-secret-key";

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub root: tempfile::TempDir,
}

fn binary() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let installed = Path::new(&home).join(".cargo/bin/s3s-fs");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("s3s-fs")
    }
}

impl S3Server {
    pub fn start() -> S3Server {
        let mut s = S3Server {
            child: None,
            port: super::free_port(),
            root: tempfile::tempdir().expect("tempdir"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs (scripts/test installs it: cargo install s3s-fs)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (an outage); the stored objects stay.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `[archive] minio_settings` pointing at this server.
    pub fn minio_settings(&self, bucket: &str, path: &str) -> String {
        format!(
            "minio_settings = {{ host = \"127.0.0.1\", port = {}, user = \"{ACCESS_KEY}\", password = \"{SECRET_KEY}\", default_bucket = \"{bucket}\", default_path = \"{path}\" }}",
            self.port
        )
    }

    /// Objects stored under `bucket/prefix`, read from the server's own files: (name, bytes).
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let dir = self.root.path().join(bucket).join(prefix);
        let mut out: Vec<(String, u64)> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let len = e.metadata().ok()?.len();
                        Some((e.file_name().into_string().ok()?, len))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

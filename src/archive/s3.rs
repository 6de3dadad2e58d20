//! The rust-s3 boundary: an S3-compatible bucket (MinIO, Garage, AWS, …) with path-style
//! addressing and a custom endpoint. Nothing of rust-s3 leaves this file.
//!
//! Object keys are `<minio_path>/<file name>` without a leading slash (the original's
//! `/var/archive_data` prefix becomes `var/archive_data/…`). The bucket is created if missing;
//! no lifecycle rule or object lock is forced on it (the original hard-wired a 2-day expiry).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use s3::creds::Credentials;
use s3::{Bucket, BucketConfiguration, Region};

use crate::config::MinioConfig;

/// Per-request time limit: a stalled server must not hold an upload or a playback forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The S3 operations this file sends, as `/metrics` names them.
const OPS: [&str; 5] = ["list", "put", "head", "get", "delete"];
/// Calls sent by this process, per entry of [`OPS`] (a multipart upload counts once).
static CALLS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

fn count(op: &str) {
    if let Some(i) = OPS.iter().position(|o| *o == op) {
        CALLS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// S3 calls this process has sent, by operation (for `/metrics` and the fleet benchmark).
pub fn calls_sent() -> Vec<(&'static str, u64)> {
    OPS.iter()
        .zip(CALLS.iter())
        .map(|(op, n)| (*op, n.load(Ordering::Relaxed)))
        .collect()
}

/// One bucket with a key prefix.
#[derive(Clone)]
pub struct S3Store {
    bucket: Box<Bucket>,
    prefix: String,
    /// For logs: `http://host:port/bucket/prefix` (never credentials).
    pub display: String,
}

/// Why an S3 call failed; rust-s3's error is kept as the source (its type is named in this
/// file only).
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 client for {what}: {detail}")]
    Client { what: String, detail: String },
    #[error("S3 {op} {key}: {source}")]
    Request {
        op: &'static str,
        key: String,
        #[source]
        source: s3::error::S3Error,
    },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("S3 {key}: stored {stored} bytes, expected {expected}; will retry")]
    Size {
        key: String,
        stored: i64,
        expected: u64,
    },
}

pub type S3Result<T> = Result<T, S3Error>;

fn request<'a>(op: &'static str, key: &'a str) -> impl FnOnce(s3::error::S3Error) -> S3Error + 'a {
    move |source| S3Error::Request {
        op,
        key: key.to_owned(),
        source,
    }
}

fn client(what: &str, detail: impl std::fmt::Display) -> S3Error {
    S3Error::Client {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

/// An object in a listing.
#[derive(Clone, Debug)]
pub struct Object {
    pub key: String,
    pub size: u64,
}

/// Normalises the original's `minio_path` into a key prefix: no leading or trailing slash.
pub fn key_prefix(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

impl S3Store {
    pub fn new(cfg: &MinioConfig, bucket: &str, path: &str) -> S3Result<S3Store> {
        let scheme = if cfg.use_ssl { "https" } else { "http" };
        let endpoint = format!("{scheme}://{}:{}", cfg.host, cfg.port);
        let region = Region::Custom {
            region: cfg.region.clone(),
            endpoint: endpoint.clone(),
        };
        let creds = Credentials::new(Some(&cfg.user), Some(&cfg.password), None, None, None)
            .map_err(|e| client("credentials", e))?;
        let bucket_name = if bucket.is_empty() { "archive" } else { bucket };
        let bucket = Bucket::new(bucket_name, region, creds)
            .map_err(|e| client(bucket_name, e))?
            .with_path_style()
            .with_request_timeout(REQUEST_TIMEOUT)
            .map_err(|e| client(bucket_name, e))?;
        let prefix = key_prefix(path);
        Ok(S3Store {
            display: format!("{endpoint}/{bucket_name}/{prefix}"),
            bucket,
            prefix,
        })
    }

    /// The key of a file name.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Creates the bucket if it does not exist (no lifecycle, no lock).
    pub async fn ensure_bucket(&self) -> S3Result<()> {
        count("list");
        match self
            .bucket
            .list(self.prefix.clone(), Some("/".into()))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if !e.to_string().contains("404") => {
                return Err(request("list", &self.display)(e))
            }
            Err(_) => {}
        }
        let mut config = BucketConfiguration::default();
        config.set_region(self.bucket.region());
        Bucket::create_with_path_style(
            &self.bucket.name(),
            self.bucket.region(),
            self.bucket
                .credentials()
                .await
                .map_err(|e| client("credentials", e))?,
            config,
        )
        .await
        .map(|_| ())
        .map_err(|e| request("create bucket", &self.bucket.name())(e))
    }

    /// Uploads a local file and checks the stored size; returns the size.
    pub async fn upload(&self, path: &Path, name: &str) -> S3Result<u64> {
        let key = self.key(name);
        let io = |source| S3Error::File {
            path: path.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        count("put");
        self.bucket
            .put_object_stream_with_content_type(&mut file, &key, "video/mp4")
            .await
            .map_err(request("put", &key))?;
        count("head");
        let (head, _) = self
            .bucket
            .head_object(&key)
            .await
            .map_err(request("head", &key))?;
        let stored = head.content_length.unwrap_or(-1);
        if stored != len as i64 {
            return Err(S3Error::Size {
                key,
                stored,
                expected: len,
            });
        }
        Ok(len)
    }

    /// Objects whose key starts with `<prefix>/<stream>`.
    pub async fn list(&self, stream_prefix: &str) -> S3Result<Vec<Object>> {
        let prefix = self.key(stream_prefix);
        count("list");
        let pages = self
            .bucket
            .list(prefix.clone(), None)
            .await
            .map_err(request("list", &prefix))?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.contents)
            .map(|o| Object {
                key: o.key,
                size: o.size,
            })
            .collect())
    }

    /// A whole object.
    pub async fn get(&self, name: &str) -> S3Result<Bytes> {
        let key = self.key(name);
        count("get");
        let r = self
            .bucket
            .get_object(&key)
            .await
            .map_err(request("get", &key))?;
        Ok(r.into_bytes())
    }

    /// A whole object, or `None` if there is none of that name.
    pub async fn get_if_exists(&self, name: &str) -> S3Result<Option<Bytes>> {
        let key = self.key(name);
        count("get");
        match self.bucket.get_object(&key).await {
            Ok(r) => Ok(Some(r.into_bytes())),
            Err(e) if e.to_string().contains("404") => Ok(None),
            Err(e) => Err(request("get", &key)(e)),
        }
    }

    /// Writes a small object whole.
    pub async fn put_bytes(&self, name: &str, bytes: &[u8], content_type: &str) -> S3Result<()> {
        let key = self.key(name);
        count("put");
        self.bucket
            .put_object_with_content_type(&key, bytes, content_type)
            .await
            .map(|_| ())
            .map_err(request("put", &key))
    }

    pub async fn delete(&self, name: &str) -> S3Result<()> {
        let key = self.key(name);
        count("delete");
        self.bucket
            .delete_object(&key)
            .await
            .map(|_| ())
            .map_err(request("delete", &key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_start_with_a_slash() {
        assert_eq!(key_prefix("/var/archive_data"), "var/archive_data");
        assert_eq!(key_prefix(""), "");
        assert_eq!(key_prefix("/"), "");
        assert_eq!(key_prefix("cams/"), "cams");
    }
}

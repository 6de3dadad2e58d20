//! The etcd boundary: the only file that names `etcd_client`. What the fleet needs from etcd,
//! in its own terms: leases kept alive, keys created only if absent (ownership), keys deleted
//! only by the lease that holds them, and a prefix read in one request.
//!
//! Every call is bounded by a timeout, so a stopped etcd shows as an error, never a hang.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp,
};

/// One request may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an etcd call failed; the client's error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: {0}")]
    Client(#[source] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("etcd closed the lease keep-alive stream")]
    KeepAliveClosed,
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        EtcdError::Client(e)
    }
}

pub type EtcdResult<T> = Result<T, EtcdError>;

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> EtcdResult<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(EtcdError::Timeout(REQUEST_TIMEOUT)),
    }
}

/// A key and what etcd knows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// A connection to an etcd cluster (cheap to clone: one shared channel).
#[derive(Clone)]
pub struct Etcd {
    client: Client,
}

impl Etcd {
    /// Connects to any of `endpoints` (`http://host:port`).
    pub async fn connect(endpoints: &[String]) -> EtcdResult<Etcd> {
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = bounded(Client::connect(endpoints, Some(options))).await?;
        Ok(Etcd { client })
    }

    /// A new lease of `ttl_s` seconds; its id.
    pub async fn grant(&mut self, ttl_s: u64) -> EtcdResult<i64> {
        let r = bounded(self.client.lease_grant(ttl_s as i64, None)).await?;
        Ok(r.id())
    }

    /// Ends a lease now: every key attached to it goes (a graceful leave).
    pub async fn revoke(&mut self, lease: i64) -> EtcdResult<()> {
        bounded(self.client.lease_revoke(lease)).await.map(|_| ())
    }

    /// Opens the keep-alive stream of a lease.
    pub async fn keeper(&mut self, lease: i64) -> EtcdResult<Keeper> {
        let (keeper, stream) = bounded(self.client.lease_keep_alive(lease)).await?;
        Ok(Keeper { keeper, stream })
    }

    /// Creates `key` with `value` attached to `lease` unless it exists; whether it was created.
    pub async fn create(&mut self, key: &str, value: &[u8], lease: i64) -> EtcdResult<bool> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        Ok(bounded(self.client.txn(txn)).await?.succeeded())
    }

    /// Sets `key` (attached to `lease` if given).
    pub async fn put(&mut self, key: &str, value: &[u8], lease: Option<i64>) -> EtcdResult<()> {
        let options = lease.map(|l| PutOptions::new().with_lease(l));
        bounded(self.client.put(key, value, options))
            .await
            .map(|_| ())
    }

    /// Deletes `key` if it is attached to `lease` (a node lets go of what it holds, never of
    /// what another node took meanwhile); whether it did.
    pub async fn delete_held(&mut self, key: &str, lease: i64) -> EtcdResult<bool> {
        let txn = Txn::new()
            .when([Compare::lease(key, CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key, None)]);
        Ok(bounded(self.client.txn(txn)).await?.succeeded())
    }

    /// Deletes `key`.
    pub async fn delete(&mut self, key: &str) -> EtcdResult<()> {
        bounded(self.client.delete(key, None)).await.map(|_| ())
    }

    /// Every key under `prefix`, in one request.
    pub async fn list(&mut self, prefix: &str) -> EtcdResult<Vec<Entry>> {
        let r = bounded(
            self.client
                .get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        Ok(r.kvs()
            .iter()
            .map(|kv| Entry {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                lease: kv.lease(),
            })
            .collect())
    }
}

/// The keep-alive stream of one lease.
pub struct Keeper {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl Keeper {
    /// Renews the lease once; its remaining TTL in seconds (0: the lease is gone).
    pub async fn renew(&mut self) -> EtcdResult<i64> {
        bounded(self.keeper.keep_alive()).await?;
        match bounded(self.stream.message()).await? {
            Some(r) => Ok(r.ttl()),
            None => Err(EtcdError::KeepAliveClosed),
        }
    }
}

//! Webhooks (ours, `[[webhooks]]`): HTTP POSTs of JSON events to operators' services.
//!
//! Events: the kinds in `events` (`stream_online`, `stream_offline`, `segment_closed`,
//! `upload_done`, `retention_deleted`, `disk_low`). Body:
//! `{"event", "time", "stream_id", …details}`.
//!
//! Never blocking media: [`Webhooks::emit`] puts the event in a bounded queue per webhook and
//! returns; a full queue drops the event and counts it. Each webhook has one sender task that
//! delivers in order and retries a failed delivery (connection error or non-2xx) after 1, 2, 4,
//! 8 and 16 s before giving up on it with a warning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use crate::config::WebhookConfig;
use crate::events::{Event, EventKind, EventSink};

/// Events waiting per webhook at most.
const QUEUE: usize = 256;
/// One delivery attempt may take this long.
const TIMEOUT: Duration = Duration::from_secs(5);
const RETRIES: [u64; 5] = [1, 2, 4, 8, 16];

struct Hook {
    events: Vec<EventKind>,
    tx: mpsc::Sender<Value>,
}

/// Every configured webhook; cheap to call when there is none.
#[derive(Default)]
pub struct Webhooks {
    hooks: Vec<Hook>,
    /// Events dropped because a webhook's queue was full.
    pub dropped: AtomicU64,
}

impl Webhooks {
    /// Starts one sender task per webhook; they end with `cancel`.
    pub fn start(cfgs: &[WebhookConfig], cancel: &CancellationToken) -> Arc<Webhooks> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        let hooks = cfgs
            .iter()
            .map(|c| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(client.clone(), c.url.clone(), rx, cancel.clone()));
                Hook {
                    events: c.events.clone(),
                    tx,
                }
            })
            .collect();
        Arc::new(Webhooks {
            hooks,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }
}

impl EventSink for Webhooks {
    /// Queues `event` for every webhook that wants it; never waits.
    fn emit(&self, stream: Option<&Uuid>, event: Event) {
        if self.hooks.is_empty() {
            return;
        }
        let kind = event.kind();
        let details = event.details();
        let mut body = json!({
            "event": kind.name(),
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "stream_id": stream,
        });
        if let (Some(b), Value::Object(d)) = (body.as_object_mut(), details) {
            b.extend(d);
        }
        for h in &self.hooks {
            if !h.events.is_empty() && !h.events.contains(&kind) {
                continue;
            }
            if h.tx.try_send(body.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The sender of one webhook: in order, with retries.
async fn deliver(
    client: reqwest::Client,
    url: String,
    mut rx: mpsc::Receiver<Value>,
    cancel: CancellationToken,
) {
    // Logs show the host only: a URL may carry a secret in its path or query.
    let target = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let body = event.to_string();
        let mut attempt = 0;
        loop {
            let sent = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let error = match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => e.without_url().to_string(),
            };
            let Some(&wait) = RETRIES.get(attempt) else {
                warn!(webhook = %target, event = %event["event"], "webhook delivery failed {} times, dropped: {error}", attempt + 1);
                break;
            };
            attempt += 1;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            }
        }
    }
}

/// Sends `stream_online` / `stream_offline` for one stream until its hub closes.
pub async fn watch_stream(hooks: Arc<Webhooks>, hub: Arc<crate::hub::StreamHub>) {
    let mut health = hub.watch_health();
    let mut online = health.borrow_and_update().online;
    while health.changed().await.is_ok() {
        let h = health.borrow_and_update().clone();
        if h.online == online {
            continue;
        }
        online = h.online;
        let event = if online {
            Event::StreamOnline
        } else {
            Event::StreamOffline {
                error: h.last_error,
            }
        };
        hooks.emit(Some(&hub.id), event);
    }
}

//! Events operators may want to hear about, as one typed list: which happened, to which stream,
//! with what details. Stages emit them into an [`EventSink`]; `webhooks` delivers them.
//!
//! Belongs here: the event names (one table: the config check, the bodies and the docs follow
//! it) and their payloads. Does not belong here: delivery (`webhooks`).

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// Every kind of event, with the name a webhook configuration and a body use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    StreamOnline,
    StreamOffline,
    SegmentClosed,
    UploadDone,
    RetentionDeleted,
    DiskLow,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::StreamOnline,
        EventKind::StreamOffline,
        EventKind::SegmentClosed,
        EventKind::UploadDone,
        EventKind::RetentionDeleted,
        EventKind::DiskLow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::StreamOnline => "stream_online",
            EventKind::StreamOffline => "stream_offline",
            EventKind::SegmentClosed => "segment_closed",
            EventKind::UploadDone => "upload_done",
            EventKind::RetentionDeleted => "retention_deleted",
            EventKind::DiskLow => "disk_low",
        }
    }

    /// The kind a configuration names, if any.
    pub fn parse(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Every name, for error messages and docs.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|k| k.name()).collect()
    }
}

/// What happened, with its details.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    StreamOnline,
    StreamOffline {
        error: Option<String>,
    },
    /// An archive file was closed and indexed.
    SegmentClosed {
        file: String,
        start_ms: i64,
        duration_ms: i64,
        bytes: u64,
        /// Why it ended (the archive's end reason, as `/segments` shows it).
        end_reason: Value,
    },
    UploadDone {
        file: String,
        key: String,
    },
    RetentionDeleted {
        file: String,
        bytes: u64,
        reason: String,
    },
    DiskLow {
        dir: String,
        free_bytes: u64,
        min_free_bytes: u64,
    },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::StreamOnline => EventKind::StreamOnline,
            Event::StreamOffline { .. } => EventKind::StreamOffline,
            Event::SegmentClosed { .. } => EventKind::SegmentClosed,
            Event::UploadDone { .. } => EventKind::UploadDone,
            Event::RetentionDeleted { .. } => EventKind::RetentionDeleted,
            Event::DiskLow { .. } => EventKind::DiskLow,
        }
    }

    /// The fields a body carries besides `event`, `time` and `stream_id`.
    pub fn details(&self) -> Value {
        match self {
            Event::StreamOnline => json!({}),
            Event::StreamOffline { error } => json!({ "error": error }),
            Event::SegmentClosed {
                file,
                start_ms,
                duration_ms,
                bytes,
                end_reason,
            } => json!({
                "file": file,
                "start_ms": start_ms,
                "duration_ms": duration_ms,
                "bytes": bytes,
                "end_reason": end_reason,
            }),
            Event::UploadDone { file, key } => json!({ "file": file, "key": key }),
            Event::RetentionDeleted {
                file,
                bytes,
                reason,
            } => json!({ "file": file, "bytes": bytes, "reason": reason }),
            Event::DiskLow {
                dir,
                free_bytes,
                min_free_bytes,
            } => json!({ "dir": dir, "free_bytes": free_bytes, "min_free_bytes": min_free_bytes }),
        }
    }
}

/// Where stages put events; must never wait (media paths call it).
pub trait EventSink: Send + Sync {
    fn emit(&self, stream: Option<&Uuid>, event: Event);
}

/// A sink that drops everything (no webhooks configured, unit tests).
pub struct Discard;

impl EventSink for Discard {
    fn emit(&self, _: Option<&Uuid>, _: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.name()), Some(k));
            assert_eq!(serde_json::to_value(k).ok(), Some(json!(k.name())));
        }
        assert_eq!(EventKind::parse("stream_exploded"), None);
    }

    #[test]
    fn details_carry_the_documented_fields() {
        let e = Event::SegmentClosed {
            file: "f.mp4".into(),
            start_ms: 1,
            duration_ms: 2,
            bytes: 3,
            end_reason: json!("size"),
        };
        assert_eq!(e.kind(), EventKind::SegmentClosed);
        let d = e.details();
        for k in ["file", "start_ms", "duration_ms", "bytes", "end_reason"] {
            assert!(d.get(k).is_some(), "{k}");
        }
        let off = Event::StreamOffline { error: None }.details();
        assert!(off.get("error").is_some());
    }
}

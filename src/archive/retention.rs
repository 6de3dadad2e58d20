//! Retention: what to delete (pure [`plan`]) and the task that deletes it.
//!
//! Per stream: `max_age` (whole segments that ended before now − max_age) and `max_bytes`
//! (oldest first until the stream fits). Globally: `min_free_bytes` for each local directory
//! (emergency deletion of the oldest local files of the streams on that disk until there is
//! room again; live outputs keep running meanwhile). Applied to local files and S3 objects
//! alike; every deletion is counted in the stream's status and logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::index::{Location, Segment};
use super::{Archive, StreamArchive};
use crate::events::Event;

/// How often retention runs.
const EVERY: Duration = Duration::from_secs(30);

/// Names (seconds) of the segments `max_age_s` and `max_bytes` want deleted, oldest first.
/// `total_bytes` is the sum of the segments' sizes (the index keeps it). Stops at the first
/// segment it keeps, so it costs as much as what it deletes.
pub fn plan(
    segments: &[Segment],
    total_bytes: u64,
    now_ms: i64,
    max_age_s: Option<u64>,
    max_bytes: Option<u64>,
) -> Vec<i64> {
    let mut out = Vec::new();
    let mut total = total_bytes;
    for s in segments {
        let too_old = max_age_s.is_some_and(|a| s.end_ms() < now_ms - (a as i64) * 1000);
        let too_big = max_bytes.is_some_and(|m| total > m);
        if !(too_old || too_big) {
            break;
        }
        out.push(s.name_s);
        total -= s.bytes;
    }
    out
}

/// Deletes what [`plan`] says for one stream.
async fn apply_limits(sa: &StreamArchive, now_ms: i64) {
    if sa.max_age_s.is_none() && sa.max_bytes.is_none() {
        return;
    }
    let victims = sa.with_index(|i| {
        plan(
            i.segments(),
            i.total_bytes(),
            now_ms,
            sa.max_age_s,
            sa.max_bytes,
        )
    });
    delete(sa, &victims, "retention limit").await;
}

async fn delete(sa: &StreamArchive, names: &[i64], why: &str) -> u64 {
    let mut freed = 0;
    for &name_s in names {
        match sa.delete(name_s).await {
            Ok(bytes) => {
                freed += bytes;
                sa.events.emit(
                    Some(&sa.id),
                    Event::RetentionDeleted {
                        file: super::index::file_name(&sa.id, name_s),
                        bytes,
                        reason: why.to_owned(),
                    },
                );
                info!(stream = %sa.id, file = %super::index::file_name(&sa.id, name_s), bytes, "deleted ({why})");
            }
            Err(e) => {
                warn!(stream = %sa.id, "cannot delete: {e}");
                break;
            }
        }
    }
    if !names.is_empty() {
        // Thumbnails go with the files they were taken from.
        let oldest_left = sa.with_index(|i| i.segments().first().map(|s| s.start_ms));
        let before = oldest_left.unwrap_or_else(|| sa.growing().map_or(i64::MAX, |g| g.start_ms));
        sa.prune_thumbnails(before).await;
    }
    freed
}

/// Frees local space on every directory below `min_free_bytes`: the oldest local files of
/// the streams in that directory go first.
async fn ensure_free_space(streams: &[Arc<StreamArchive>], min_free: u64) {
    let mut by_dir: HashMap<PathBuf, Vec<&Arc<StreamArchive>>> = HashMap::new();
    for sa in streams {
        by_dir.entry(sa.dir.clone()).or_default().push(sa);
    }
    for (dir, group) in by_dir {
        let Ok(free) = fs4::available_space(&dir) else {
            continue;
        };
        if free >= min_free {
            continue;
        }
        let mut need = min_free - free;
        warn!(dir = %dir.display(), free, min_free, "disk low: deleting the oldest local files");
        if let Some(sa) = group.first() {
            sa.events.emit(
                None,
                Event::DiskLow {
                    dir: dir.display().to_string(),
                    free_bytes: free,
                    min_free_bytes: min_free,
                },
            );
        }
        // Oldest local segments across the streams of this directory.
        let mut local: Vec<(i64, &Arc<StreamArchive>, i64)> = group
            .iter()
            .flat_map(|sa| {
                sa.with_index(|i| {
                    i.segments()
                        .iter()
                        .filter(|s| s.location == Location::Local)
                        .map(|s| (s.start_ms, s.name_s))
                        .collect::<Vec<_>>()
                })
                .into_iter()
                .map(move |(start, name)| (start, *sa, name))
            })
            .collect();
        local.sort_by_key(|(start, _, _)| *start);
        for (_, sa, name_s) in local {
            if need == 0 {
                break;
            }
            let freed = delete(sa, &[name_s], "disk low").await;
            if freed == 0 {
                break;
            }
            need = need.saturating_sub(freed);
        }
    }
}

/// Runs retention every [`EVERY`], and whenever a file is closed, until
/// `cancel` fires.
pub async fn run(archive: Arc<Archive>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wake = archive.retention_wake();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        let streams = archive.all();
        let now_ms = crate::media::unix_ms_now();
        for sa in &streams {
            // In a fleet the bucket is shared: only the node recording a camera trims it.
            if archive.fleet() && sa.s3.is_some() && !archive.records_here(&sa.id) {
                continue;
            }
            apply_limits(sa, now_ms).await;
        }
        if let Some(min_free) = archive.config().min_free_bytes {
            ensure_free_space(&streams, min_free).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::index::EndReason;

    fn seg(start_s: i64, bytes: u64) -> Segment {
        Segment {
            name_s: start_s,
            start_ms: start_s * 1000,
            duration_ms: 10_000,
            bytes,
            location: Location::Local,
            end: EndReason::Rotation,
        }
    }

    #[test]
    fn age_and_size_delete_oldest_first_and_stop_when_satisfied() {
        let segs = [seg(0, 10), seg(10, 10), seg(20, 10), seg(30, 10)];
        let plan = |now, age, bytes| plan(&segs, 40, now, age, bytes);
        // Now = 45 s, max age 20 s: segments that ended before 25 s go (0 and 10).
        assert_eq!(plan(45_000, Some(20), None), vec![0, 10]);
        // 40 bytes, at most 25: the two oldest go.
        assert_eq!(plan(45_000, None, Some(25)), vec![0, 10]);
        assert_eq!(plan(45_000, None, Some(40)), Vec::<i64>::new());
        assert_eq!(plan(45_000, None, None), Vec::<i64>::new());
        assert_eq!(plan(45_000, Some(1), Some(0)), vec![0, 10, 20, 30]);
    }
}

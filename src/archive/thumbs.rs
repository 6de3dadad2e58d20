//! Archive thumbnails: while a stream records, a JPEG of a keyframe every
//! `thumbnail_interval_ms`, stored beside its files (disk: `<dir>/thumbs/<uuid>_<unix ms>.jpg`;
//! S3: the same name under the bucket prefix) and listed per stream, so a timeline can show
//! what happened without playing the video. Retention deletes them with the files.
//!
//! Belongs here: which keyframes become thumbnails ([`Pace`], pure), their names, storing,
//! listing and pruning them. Does not belong here: decoding (a [`Thumbnailer`] does it; `app`
//! gives one made of the `snapshot` stage), HTTP (`api::archive`).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use tracing::warn;
use uuid::Uuid;

use super::stream::StreamArchive;
use super::StorageError;
use crate::media::Frame;

/// Width of a thumbnail, pixels.
pub const WIDTH: u32 = 320;
/// The folder (disk) or key part (S3) thumbnails live under.
pub const FOLDER: &str = "thumbs";
/// How often a node that does not record a stream re-lists its thumbnails in the bucket.
const RELIST_MS: i64 = 10_000;

/// Makes a thumbnail of a keyframe; `None` when it cannot (the recording goes on).
pub trait Thumbnailer: Send + Sync {
    fn jpeg(&self, keyframe: Frame, width: u32) -> BoxFuture<'static, Option<Bytes>>;
}

/// Which keyframes become thumbnails: the first, then the first at least `every_ms` after the
/// last one taken (by wall clock). The second comes sooner, after `first_gap_ms`: streams that
/// came online together (a gateway's start) take their thumbnails at different moments from
/// then on, not all in the same second every interval (each is a decode). Pure.
#[derive(Clone, Debug)]
pub struct Pace {
    every_ms: i64,
    /// The wait after the next thumbnail taken: `first_gap_ms` after the first, then `every_ms`.
    gap_ms: i64,
    last_ms: Option<i64>,
}

impl Pace {
    /// `first_gap_ms` is clamped to `1..=every_ms`.
    pub fn new(every_ms: i64, first_gap_ms: i64) -> Pace {
        Pace {
            every_ms,
            gap_ms: first_gap_ms.clamp(1, every_ms.max(1)),
            last_ms: None,
        }
    }

    /// Whether `f` is the next thumbnail (and if so, counts it as taken).
    pub fn take(&mut self, f: &Frame) -> bool {
        if self.every_ms <= 0 || !f.is_video_key() {
            return false;
        }
        match self.last_ms {
            Some(l) if f.wall_ms < l + self.gap_ms => return false,
            Some(_) => self.gap_ms = self.every_ms,
            None => {}
        }
        self.last_ms = Some(f.wall_ms);
        true
    }
}

pub fn file_name(id: &Uuid, ms: i64) -> String {
    format!("{id}_{ms}.jpg")
}

/// The time of a thumbnail from its file name (`<uuid>_<unix ms>.jpg`).
pub fn parse_name(id: &Uuid, name: &str) -> Option<i64> {
    let rest = name.strip_prefix(&id.to_string())?.strip_prefix('_')?;
    let ms = rest.strip_suffix(".jpg")?;
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse().ok()
}

/// A stream's thumbnails: their times, and when the bucket was last listed.
#[derive(Debug, Default)]
pub struct Known {
    pub times_ms: BTreeSet<i64>,
    pub listed_ms: i64,
}

impl StreamArchive {
    fn thumb_key(&self, ms: i64) -> String {
        format!("{FOLDER}/{}", file_name(&self.id, ms))
    }

    fn thumbs(&self) -> std::sync::MutexGuard<'_, Known> {
        self.thumbs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a thumbnail taken at `ms`.
    pub async fn store_thumbnail(&self, ms: i64, jpeg: Bytes) -> Result<(), StorageError> {
        match &self.s3 {
            Some(s3) => {
                s3.put_bytes(&self.thumb_key(ms), &jpeg, "image/jpeg")
                    .await?
            }
            None => {
                let dir = self.dir.join(FOLDER);
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(StorageError::io(dir.display()))?;
                let path = dir.join(file_name(&self.id, ms));
                let part = path.with_extension("jpg.part");
                tokio::fs::write(&part, &jpeg)
                    .await
                    .map_err(StorageError::io(part.display()))?;
                tokio::fs::rename(&part, &path)
                    .await
                    .map_err(StorageError::io(path.display()))?;
            }
        }
        self.thumbs().times_ms.insert(ms);
        Ok(())
    }

    /// Lists what storage holds when it never was (the first time thumbnails are asked for or
    /// pruned, not at start-up), or when the last listing is older than `max_age_ms`.
    async fn list_if_due(&self, max_age_ms: Option<i64>) {
        let listed = self.thumbs().listed_ms;
        let stale = max_age_ms.is_some_and(|m| crate::media::unix_ms_now() - listed > m);
        if listed == 0 || stale {
            if let Err(e) = self.list_thumbnails().await {
                warn!(stream = %self.id, "cannot list thumbnails: {e}");
            }
        }
    }

    async fn list_thumbnails(&self) -> Result<(), StorageError> {
        let mut found = BTreeSet::new();
        match &self.s3 {
            Some(s3) => {
                for o in s3.list(&format!("{FOLDER}/{}_", self.id)).await? {
                    if let Some(ms) = o
                        .key
                        .rsplit('/')
                        .next()
                        .and_then(|n| parse_name(&self.id, n))
                    {
                        found.insert(ms);
                    }
                }
            }
            None => {
                let dir = self.dir.join(FOLDER);
                match std::fs::read_dir(&dir) {
                    Ok(entries) => {
                        for e in entries.flatten() {
                            if let Some(ms) =
                                e.file_name().to_str().and_then(|n| parse_name(&self.id, n))
                            {
                                found.insert(ms);
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(dir.display())(e)),
                }
            }
        }
        let mut t = self.thumbs();
        t.times_ms.extend(found);
        t.listed_ms = crate::media::unix_ms_now();
        Ok(())
    }

    /// Times of the thumbnails in `[start_ms, end_ms)`, oldest first; re-lists the bucket
    /// (at most every [`RELIST_MS`]) when another node may be the one taking them.
    pub async fn thumbnails(&self, start_ms: i64, end_ms: i64, recording_here: bool) -> Vec<i64> {
        let others_write = self.s3.is_some() && !recording_here;
        self.list_if_due(others_write.then_some(RELIST_MS)).await;
        self.thumbs()
            .times_ms
            .range(start_ms..end_ms)
            .copied()
            .collect()
    }

    /// One thumbnail's bytes; `None` if there is none at `ms`.
    pub async fn thumbnail(&self, ms: i64) -> Result<Option<Bytes>, StorageError> {
        self.list_if_due(None).await;
        if !self.thumbs().times_ms.contains(&ms) {
            return Ok(None);
        }
        match &self.s3 {
            Some(s3) => Ok(s3.get_if_exists(&self.thumb_key(ms)).await?),
            None => {
                let path = self.dir.join(FOLDER).join(file_name(&self.id, ms));
                match tokio::fs::read(&path).await {
                    Ok(b) => Ok(Some(Bytes::from(b))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(StorageError::io(path.display())(e)),
                }
            }
        }
    }

    /// Deletes the thumbnails older than `before_ms` (retention: the files they belong to are
    /// gone); how many.
    pub async fn prune_thumbnails(&self, before_ms: i64) -> usize {
        self.list_if_due(None).await;
        let old: Vec<i64> = self.thumbs().times_ms.range(..before_ms).copied().collect();
        let mut n = 0;
        for ms in old {
            let gone = match &self.s3 {
                Some(s3) => s3.delete(&self.thumb_key(ms)).await.is_ok(),
                None => {
                    let path = self.dir.join(FOLDER).join(file_name(&self.id, ms));
                    match tokio::fs::remove_file(&path).await {
                        Ok(()) => true,
                        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
                    }
                }
            };
            if gone {
                self.thumbs().times_ms.remove(&ms);
                n += 1;
            }
        }
        n
    }
}

/// Takes a thumbnail of `keyframe` in the background and stores it; one at a time per
/// stream (`busy`): a keyframe that comes while one is being made is skipped.
pub fn take(
    archive: &Arc<StreamArchive>,
    maker: &Arc<dyn Thumbnailer>,
    keyframe: Frame,
    busy: &Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    if busy.swap(true, Ordering::AcqRel) {
        return;
    }
    let (archive, maker, busy) = (Arc::clone(archive), Arc::clone(maker), Arc::clone(busy));
    tokio::spawn(async move {
        let ms = keyframe.wall_ms;
        if let Some(jpeg) = maker.jpeg(keyframe, WIDTH).await {
            if let Err(e) = archive.store_thumbnail(ms, jpeg).await {
                warn!(stream = %archive.id, "cannot store a thumbnail: {e}");
            }
        }
        busy.store(false, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_at(ms: i64, key: bool) -> Frame {
        let mut f = Frame::test_video(ms / 40, key, Bytes::from_static(&[0, 0, 0, 1, 0x65]));
        f.wall_ms = ms;
        f
    }

    #[test]
    fn one_keyframe_per_interval_becomes_a_thumbnail() {
        let mut p = Pace::new(60_000, 60_000);
        assert!(p.take(&key_at(1_000, true)), "the first keyframe");
        assert!(!p.take(&key_at(1_040, false)), "not a keyframe");
        assert!(!p.take(&key_at(3_000, true)), "too soon");
        assert!(!p.take(&key_at(60_999, true)));
        assert!(p.take(&key_at(61_000, true)));
        assert!(!p.take(&key_at(120_999, true)));
        assert!(p.take(&key_at(121_000, true)));
        assert!(
            !Pace::new(0, 0).take(&key_at(1_000, true)),
            "0 turns them off"
        );
    }

    #[test]
    fn streams_started_together_take_their_thumbnails_apart() {
        // Two streams online in the same second: the second thumbnail comes after each one's
        // own gap, and every interval after that keeps them that far apart.
        let every = 60_000;
        let taken = |first_gap_ms: i64| {
            let mut p = Pace::new(every, first_gap_ms);
            (0..400_000 / 2000)
                .map(|i| 1_000 + i * 2000)
                .filter(|&ms| p.take(&key_at(ms, true)))
                .collect::<Vec<_>>()
        };
        let (a, b) = (taken(33_000), taken(57_000));
        assert_eq!(
            (a[0], b[0]),
            (1_000, 1_000),
            "both take their first keyframe"
        );
        assert_eq!(a[1], 35_000, "the first keyframe 33 s on");
        assert_eq!(b[1], 59_000, "the first keyframe 57 s on");
        for (x, y) in a[1..].iter().zip(&b[1..]) {
            assert_eq!(y - x, 24_000, "apart for good");
        }
        assert!(a.windows(2).skip(1).all(|w| w[1] - w[0] == every));
    }

    #[test]
    fn names_round_trip_and_odd_ones_are_not_thumbnails() {
        let id = Uuid::from_u128(7);
        let name = file_name(&id, 1_796_455_884_939);
        assert_eq!(parse_name(&id, &name), Some(1_796_455_884_939));
        for bad in [
            format!("{id}_.jpg"),
            format!("{id}_12x.jpg"),
            format!("{id}_12.jpg.part"),
            format!("{}_12.jpg", Uuid::from_u128(8)),
            format!("{id}_1796455884.mp4"),
            format!("{id}_99999999999999999999999.jpg"),
        ] {
            assert_eq!(parse_name(&id, &bad), None, "{bad}");
        }
    }
}

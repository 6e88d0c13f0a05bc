//! Where Ferry writes files: the [`OutputStore`] trait, a local folder ([`LocalOutput`]) and S3
//! ([`S3Output`]), opened from a user's location (a path or `s3://bucket/prefix/`) by
//! [`open_output`]. The Parquet sink's datasets and `export-back`'s DynamoDB import files go
//! through it.
//!
//! Every object appears whole or not at all, and [`OutputStore::put_new`] never replaces one:
//! - local: the bytes go to a hidden temporary file (`.tmp-…`, which readers skip) in the target
//!   folder, are synced, then hard-linked to the final name (which fails if the name exists) and
//!   the temporary name removed;
//! - S3: one `PutObject` with `If-None-Match: *` (S3 conditional writes), which stores the object
//!   whole or refuses it with 412 when the key exists.
//!
//! Keys are `/`-separated and relative to the location, as S3 keys are relative to a prefix.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use crate::config::AwsSettings;
use crate::store::ObjectMeta;
use crate::{Error, Result};

/// How a [`OutputStore::put_new`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created.
    Created,
    /// An object with that key exists already; nothing was written.
    Exists,
}

/// A place Ferry writes objects to.
#[async_trait]
pub trait OutputStore: Send + Sync + std::fmt::Debug {
    /// Creates `key` with `bytes`, atomically, unless it exists.
    async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome>;
    /// Creates or replaces `key` with `bytes`, atomically (manifests and summaries).
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()>;
    /// The object's body, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// The object's size, or `None` when it does not exist.
    async fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Every object under `prefix` (relative, ending in `/`, or empty), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// Removes `key` (nothing when it does not exist).
    async fn delete(&self, key: &str) -> Result<()>;
    /// The location of `key`, for messages and manifests (a path or an `s3://` URL).
    fn location(&self, key: &str) -> String;
}

/// Opens an output location: `s3://bucket/prefix` through the AWS SDK, anything else as a local
/// folder (created when missing).
pub async fn open_output(location: &str, aws: &AwsSettings) -> Result<Box<dyn OutputStore>> {
    if crate::store::is_s3(location) {
        let url = crate::s3::S3Url::parse(location)?;
        let config = crate::aws::sdk_config(aws).await;
        return Ok(Box::new(S3Output {
            client: crate::aws::s3_client(&config, aws),
            bucket: url.bucket,
            prefix: url.prefix,
        }));
    }
    Ok(Box::new(LocalOutput::create(Path::new(location))?))
}

/// The canonical form of an output location, as recorded in the ledger: an absolute path, or an
/// `s3://bucket/prefix/` URL ending in `/`.
pub fn canonical_location(location: &str) -> Result<String> {
    if crate::store::is_s3(location) {
        let url = crate::s3::S3Url::parse(location)?;
        return Ok(format!("s3://{}/{}", url.bucket, url.prefix));
    }
    let path = Path::new(location);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| Error::Io {
                location: location.to_string(),
                source,
            })?
            .join(path)
    };
    Ok(absolute.display().to_string())
}

/// A local folder.
#[derive(Clone, Debug)]
pub struct LocalOutput {
    root: PathBuf,
}

impl LocalOutput {
    /// The folder `root`, created when missing.
    pub fn create(root: &Path) -> Result<LocalOutput> {
        std::fs::create_dir_all(root).map_err(|source| Error::Io {
            location: root.display().to_string(),
            source,
        })?;
        Ok(LocalOutput {
            root: root.to_path_buf(),
        })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        if key.is_empty()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::BadKey(key.to_string()));
        }
        Ok(self.root.join(relative))
    }

    fn io(&self, key: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        let location = self.location(key);
        move |source| Error::Io { location, source }
    }

    /// Writes `bytes` to a synced temporary file beside `path`; returns its path.
    ///
    /// The name is `.tmp-<name>-<pid>-<n>`, `n` a number no other call in this process returns
    /// (the clock's nanoseconds, raised past the last one handed out): two writers of the same key
    /// in one process, racing on two threads, never share a temporary file, so neither can link or
    /// remove the other's. The file is created exclusively, so a name another process left is
    /// never written into either.
    fn write_temporary(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        loop {
            let temporary = dir.join(format!(
                ".tmp-{name}-{}-{}",
                std::process::id(),
                unique_number()
            ));
            let mut file = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)
            {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            file.write_all(bytes)?;
            file.sync_all()?;
            return Ok(temporary);
        }
    }

    fn sync_dir(path: &Path) {
        if let Some(dir) = path.parent() {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
    }
}

/// A number no earlier call in this process returned: the clock's nanoseconds since the epoch,
/// or one more than the last number when the clock has not moved past it.
fn unique_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .expect("the update always succeeds");
    now.max(previous + 1)
}

#[async_trait]
impl OutputStore for LocalOutput {
    async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome> {
        let path = self.path_of(key)?;
        let outcome = tokio::task::spawn_blocking(move || -> std::io::Result<PutOutcome> {
            if path.exists() {
                return Ok(PutOutcome::Exists);
            }
            let temporary = LocalOutput::write_temporary(&path, &bytes)?;
            let linked = std::fs::hard_link(&temporary, &path);
            let _ = std::fs::remove_file(&temporary);
            match linked {
                Ok(()) => {
                    LocalOutput::sync_dir(&path);
                    Ok(PutOutcome::Created)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(PutOutcome::Exists),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(self.io(key))?;
        Ok(outcome)
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path_of(key)?;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let temporary = LocalOutput::write_temporary(&path, &bytes)?;
            std::fs::rename(&temporary, &path)?;
            LocalOutput::sync_dir(&path);
            Ok(())
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(self.io(key))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path_of(key)?).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(key)(e)),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.path_of(key)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(key)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let store = crate::store::LocalStore::new(&self.root);
        crate::store::ObjectStore::list(&store, prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(key)(e)),
        }
    }

    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

/// A prefix of an S3 bucket.
#[derive(Clone, Debug)]
pub struct S3Output {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Output {
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error(&self, operation: &str, key: &str, e: &(dyn std::error::Error + 'static)) -> Error {
        crate::aws::request_error(operation, &self.location(key), e)
    }
}

#[async_trait]
impl OutputStore for S3Output {
    async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .if_none_match("*")
            .body(bytes.into())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(PutOutcome::Created),
            // 412: the key exists; 409: a concurrent conditional write of the same key won.
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
            {
                Ok(PutOutcome::Exists)
            }
            Err(e) => Err(self.error("PutObject", key, &e)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, &e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(object) => object,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Ok(None)
            }
            Err(e) => return Err(self.error("GetObject", key, &e)),
        };
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| self.error("GetObject", key, &e))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.error("HeadObject", key, &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, &e))?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    objects.push(ObjectMeta {
                        key: key.to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, &e))?;
        Ok(())
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers racing on one key from many threads of one process (racing loaders of one chunk):
    /// exactly one creates it, every other is told it exists, none fails, and no temporary file
    /// is left. Writers sharing a temporary name failed here with "No such file or directory".
    #[test]
    fn racing_writers_in_one_process_create_a_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::sync::Arc::new(LocalOutput::create(dir.path()).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .max_blocking_threads(8)
            .build()
            .unwrap();
        for round in 0..200 {
            let key = format!("t/part-{round}.parquet");
            let outcomes: Vec<PutOutcome> = runtime.block_on(async {
                let writers: Vec<_> = (0..8u8)
                    .map(|writer| {
                        let (out, key) = (out.clone(), key.clone());
                        tokio::spawn(async move { out.put_new(&key, vec![writer; 64]).await })
                    })
                    .collect();
                let mut outcomes = Vec::new();
                for writer in writers {
                    outcomes.push(writer.await.unwrap().unwrap());
                }
                outcomes
            });
            let created = outcomes
                .iter()
                .filter(|o| **o == PutOutcome::Created)
                .count();
            assert_eq!(created, 1, "round {round}: {outcomes:?}");
            let body = runtime.block_on(out.get(&key)).unwrap().unwrap();
            assert!(
                body.len() == 64 && body.iter().all(|b| *b == body[0]),
                "round {round}"
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path().join("t"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".tmp-"))
            .collect();
        assert_eq!(left, Vec::<String>::new());
    }

    #[test]
    fn unique_numbers_never_repeat_across_threads() {
        let numbers: Vec<u64> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..10_000).map(|_| unique_number()).collect::<Vec<_>>()))
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let distinct: std::collections::HashSet<u64> = numbers.iter().copied().collect();
        assert_eq!(distinct.len(), numbers.len());
    }

    #[tokio::test]
    async fn local_objects_are_created_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = LocalOutput::create(&dir.path().join("out")).unwrap();
        assert_eq!(
            out.put_new("t/a.parquet", b"one".to_vec()).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            out.put_new("t/a.parquet", b"two".to_vec()).await.unwrap(),
            PutOutcome::Exists
        );
        assert_eq!(out.get("t/a.parquet").await.unwrap().unwrap(), b"one");
        out.put("t/_manifest.json", b"{}".to_vec()).await.unwrap();
        out.put("t/_manifest.json", b"{1}".to_vec()).await.unwrap();
        assert_eq!(out.size("t/_manifest.json").await.unwrap(), Some(3));
        let keys: Vec<String> = out
            .list("t/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            keys,
            ["t/_manifest.json", "t/a.parquet"],
            "no temporary file is left"
        );
        out.delete("t/a.parquet").await.unwrap();
        out.delete("t/a.parquet").await.unwrap();
        assert_eq!(out.get("t/a.parquet").await.unwrap(), None);
        assert!(out.put_new("../x", vec![]).await.is_err());
        assert!(canonical_location("s3://b/p").unwrap() == "s3://b/p/");
    }
}

//! Where export objects come from: the [`ObjectStore`] trait, [`LocalStore`] (a local folder), and
//! [`open_export`], which turns a user's `--export` (a path or an `s3://` URL) into a store.
//!
//! Keys are `/`-separated and relative to the store's root, as S3 keys are relative to a bucket.
//! Objects are read as streams, never buffered whole (manifests excepted, which are small).

use std::path::{Component, Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::{Error, Result};

/// An object's key and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A streaming object body.
pub type ObjectStream = Pin<Box<dyn AsyncRead + Send>>;

/// An object opened for reading, with the identity of the version being read: `etag=… size=…` on
/// S3, `size=… mtime_ns=…` for a local file. A later read can be pinned to it.
pub struct OpenedObject {
    /// The body.
    pub stream: ObjectStream,
    /// The version's identity.
    pub identity: String,
}

/// [`Error::ObjectChanged`] unless `identity` is the `expected` one (when one is expected).
pub fn check_identity(location: &str, expected: Option<&str>, identity: &str) -> Result<()> {
    match expected {
        Some(expected) if expected != identity => Err(Error::ObjectChanged {
            location: location.to_string(),
            expected: expected.to_string(),
            found: identity.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A source of export objects (a local folder now; S3 in the fleet).
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Every object under `prefix` (a folder key ending in `/`, or empty), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// A small object's whole body (manifests and checksum files).
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// A streaming body for a possibly large object.
    async fn open(&self, key: &str) -> Result<ObjectStream>;
    /// A streaming body with its version's identity; with `expect`, only that version
    /// ([`Error::ObjectChanged`] otherwise; S3 reads it with `If-Match`).
    async fn open_pinned(&self, key: &str, expect: Option<&str>) -> Result<OpenedObject>;
    /// A human-readable location for `key` (a path or URL), used in messages.
    fn location(&self, key: &str) -> String;
}

/// An export location, opened.
#[derive(Clone, Debug)]
pub struct ExportStore {
    /// The store.
    pub store: std::sync::Arc<dyn ObjectStore>,
    /// The key prefix of the export (or of a prefix holding exactly one) in the store.
    pub prefix: String,
    /// The location in a form every process of the run can open again: an absolute path or an
    /// `s3://bucket/prefix/` URL. It is recorded in the run.
    pub location: String,
}

/// Whether `location` names S3 rather than a local folder.
pub fn is_s3(location: &str) -> bool {
    location.starts_with("s3://")
}

/// Opens an export location: `s3://bucket/prefix` through the AWS SDK, anything else as a local
/// folder (checked to exist).
pub async fn open_export(location: &str, aws: &crate::config::AwsSettings) -> Result<ExportStore> {
    if is_s3(location) {
        let url = crate::s3::S3Url::parse(location)?;
        let config = crate::aws::sdk_config(aws).await;
        let store = crate::s3::S3Store::new(crate::aws::s3_client(&config, aws), &url.bucket);
        return Ok(ExportStore {
            store: std::sync::Arc::new(store),
            location: format!("s3://{}/{}", url.bucket, url.prefix),
            prefix: url.prefix,
        });
    }
    let (store, prefix) = LocalStore::for_export_path(Path::new(location))?;
    let absolute = store.root().join(prefix.trim_end_matches('/'));
    Ok(ExportStore {
        store: std::sync::Arc::new(store),
        prefix,
        location: absolute.display().to_string(),
    })
}

/// A local folder as an object store.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    /// The store and key prefix for a user-given export path. When the path runs through an
    /// `AWSDynamoDB` folder, the store is rooted above it (as a bucket is), so the manifests' full
    /// keys resolve wherever the export was copied; otherwise the path itself is the root.
    pub fn for_export_path(path: &Path) -> Result<(LocalStore, String)> {
        let path = std::fs::canonicalize(path).map_err(|source| Error::Io {
            location: path.display().to_string(),
            source,
        })?;
        if path.is_file() {
            // One file (a scan dump, or a lone data file): the store is its folder, the prefix
            // its name.
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
            return Ok((LocalStore::new(folder), name));
        }
        if !path.is_dir() {
            return Err(Error::NotAFolder(path));
        }
        let components: Vec<Component<'_>> = path.components().collect();
        if let Some(at) = components
            .iter()
            .rposition(|c| c.as_os_str() == "AWSDynamoDB")
        {
            let root: PathBuf = components[..at].iter().collect();
            let prefix: Vec<String> = components[at..]
                .iter()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            return Ok((LocalStore::new(root), format!("{}/", prefix.join("/"))));
        }
        Ok((LocalStore::new(path), String::new()))
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::BadKey(key.to_string()));
        }
        Ok(self.root.join(relative))
    }

    fn io_error(&self, key: &str, source: std::io::Error) -> Error {
        Error::Io {
            location: self.location(key),
            source,
        }
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let start = self.path_of(prefix.trim_end_matches('/'))?;
        if !prefix.is_empty() && !prefix.ends_with('/') && start.is_file() {
            // A prefix naming one file (a scan dump given as --export): that file.
            let size = std::fs::metadata(&start).map(|m| m.len()).unwrap_or(0);
            return Ok(vec![ObjectMeta {
                key: prefix.to_string(),
                size,
            }]);
        }
        let root = self.root.clone();
        let location = self.location(prefix);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(Error::Io {
                            location: dir.display().to_string(),
                            source,
                        })
                    }
                };
                for entry in entries {
                    let entry = entry.map_err(|source| Error::Io {
                        location: location.clone(),
                        source,
                    })?;
                    let file_type = entry.file_type().map_err(|source| Error::Io {
                        location: entry.path().display().to_string(),
                        source,
                    })?;
                    let path = entry.path();
                    if file_type.is_dir() {
                        stack.push(path);
                    } else if file_type.is_file() {
                        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                        let key = path
                            .strip_prefix(&root)
                            .map_err(|_| Error::BadKey(path.display().to_string()))?
                            .components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join("/");
                        out.push(ObjectMeta { key, size });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| Error::Io {
            location: self.location(prefix),
            source: std::io::Error::other(e),
        })?
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path_of(key)?;
        tokio::fs::read(&path)
            .await
            .map_err(|e| self.io_error(key, e))
    }

    async fn open(&self, key: &str) -> Result<ObjectStream> {
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.io_error(key, e))?;
        Ok(Box::pin(tokio::io::BufReader::with_capacity(
            256 * 1024,
            file,
        )))
    }

    async fn open_pinned(&self, key: &str, expect: Option<&str>) -> Result<OpenedObject> {
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.io_error(key, e))?;
        // The identity of the open file itself, so a file replaced after the check is not read.
        let metadata = file.metadata().await.map_err(|e| self.io_error(key, e))?;
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let identity = format!("size={} mtime_ns={modified}", metadata.len());
        check_identity(&self.location(key), expect, &identity)?;
        Ok(OpenedObject {
            stream: Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, file)),
            identity,
        })
    }

    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn lists_reads_and_refuses_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/x.json.gz"), b"12345").unwrap();
        std::fs::write(dir.path().join("a/y"), b"").unwrap();
        let store = LocalStore::new(dir.path());
        let listed = store.list("").await.unwrap();
        assert_eq!(
            listed,
            vec![
                ObjectMeta {
                    key: "a/b/x.json.gz".into(),
                    size: 5
                },
                ObjectMeta {
                    key: "a/y".into(),
                    size: 0
                }
            ]
        );
        assert_eq!(store.list("a/b/").await.unwrap().len(), 1);
        assert!(store.list("missing/").await.unwrap().is_empty());
        let mut body = String::new();
        store
            .open("a/b/x.json.gz")
            .await
            .unwrap()
            .read_to_string(&mut body)
            .await
            .unwrap();
        assert_eq!(body, "12345");
        assert!(matches!(
            store.get("../etc/passwd").await,
            Err(Error::BadKey(_))
        ));
    }

    #[test]
    fn roots_above_the_awsdynamodb_folder() {
        let dir = tempfile::tempdir().unwrap();
        let export = dir.path().join("p/AWSDynamoDB/0170-ab");
        std::fs::create_dir_all(&export).unwrap();
        let (store, prefix) = LocalStore::for_export_path(&export).unwrap();
        assert_eq!(
            store.root(),
            std::fs::canonicalize(dir.path().join("p")).unwrap()
        );
        assert_eq!(prefix, "AWSDynamoDB/0170-ab/");
        let (store, prefix) = LocalStore::for_export_path(dir.path()).unwrap();
        assert_eq!(store.root(), std::fs::canonicalize(dir.path()).unwrap());
        assert_eq!(prefix, "");
    }
}

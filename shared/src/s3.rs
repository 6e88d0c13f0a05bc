//! [`S3Store`]: an export in S3 (or an S3-compatible store) as an [`ObjectStore`].
//!
//! Keys are full keys from the bucket root, as the manifests write them. Listing pages through
//! `ListObjectsV2`; data files are streamed from `GetObject`'s body, never buffered whole (a failed
//! stream fails the shard's current chunk, which resumes from its checkpoint). Each request is
//! retried by the SDK's standard retry mode (`[aws] max_attempts`).

use async_trait::async_trait;

use crate::store::{ObjectMeta, ObjectStore, ObjectStream, OpenedObject};
use crate::{Error, Result};

/// An S3 bucket as an object store.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

/// An `s3://bucket/prefix` URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix: empty, or ending in `/`.
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket`, `s3://bucket/prefix` or `s3://bucket/prefix/`.
    pub fn parse(url: &str) -> Result<S3Url> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::ExportNotFound(format!("{url} is not an s3://bucket/prefix URL"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::ExportNotFound(format!("{url} names no bucket")));
        }
        let prefix = prefix.trim_start_matches('/');
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

impl S3Store {
    /// A store over `bucket` with `client`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> S3Store {
        S3Store {
            client,
            bucket: bucket.into(),
        }
    }

    /// `GetObject` of `key`; the body is read by the caller.
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("GetObject", key, &e))
    }

    fn error(&self, operation: &str, key: &str, e: &(dyn std::error::Error + 'static)) -> Error {
        crate::aws::request_error(operation, &self.location(key), e)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, &e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
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

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let body = self
            .get_object(key)
            .await?
            .body
            .collect()
            .await
            .map_err(|e| self.error("GetObject", key, &e))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn open(&self, key: &str) -> Result<ObjectStream> {
        let object = self.get_object(key).await?;
        Ok(Box::pin(object.body.into_async_read()))
    }

    async fn open_pinned(&self, key: &str, expect: Option<&str>) -> Result<OpenedObject> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(etag) = expect.and_then(etag_of_identity) {
            request = request.if_match(etag);
        }
        let object = match request.send().await {
            Ok(object) => object,
            Err(e) => {
                let precondition_failed =
                    e.raw_response().is_some_and(|r| r.status().as_u16() == 412);
                if precondition_failed {
                    return Err(Error::ObjectChanged {
                        location: self.location(key),
                        expected: expect.unwrap_or_default().to_string(),
                        found: "another version (If-Match failed)".into(),
                    });
                }
                return Err(self.error("GetObject", key, &e));
            }
        };
        let identity = format!(
            "etag={} size={}",
            object.e_tag().unwrap_or_default(),
            object.content_length().unwrap_or(0)
        );
        crate::store::check_identity(&self.location(key), expect, &identity)?;
        Ok(OpenedObject {
            stream: Box::pin(object.body.into_async_read()),
            identity,
        })
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }
}

/// The ETag in an S3 identity (`etag="…" size=…`).
fn etag_of_identity(identity: &str) -> Option<&str> {
    identity
        .strip_prefix("etag=")
        .and_then(|rest| rest.rsplit_once(" size="))
        .map(|(etag, _)| etag)
        .filter(|etag| !etag.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_carry_the_etag() {
        assert_eq!(
            etag_of_identity("etag=\"abc-1\" size=12"),
            Some("\"abc-1\"")
        );
        assert_eq!(etag_of_identity("etag= size=0"), None);
        assert_eq!(etag_of_identity("size=1 mtime_ns=2"), None);
    }

    #[test]
    fn parses_s3_urls() {
        assert_eq!(
            S3Url::parse("s3://b/AWSDynamoDB/123").unwrap(),
            S3Url {
                bucket: "b".into(),
                prefix: "AWSDynamoDB/123/".into()
            }
        );
        assert_eq!(S3Url::parse("s3://b").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://b/p/").unwrap().prefix, "p/");
        assert!(S3Url::parse("s3:///p").is_err());
        assert!(S3Url::parse("/local/path").is_err());
    }
}

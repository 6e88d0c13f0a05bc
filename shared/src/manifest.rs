//! Finding a DynamoDB export, parsing its manifests and turning its data files into shards.
//!
//! An export is `…/AWSDynamoDB/<ExportId>/` holding `manifest-summary.json`, `manifest-files.json`,
//! their checksum files (`.md5` on real exports, `.checksum` in the docs; both are accepted) and
//! `data/*.json.gz`. The checksum files hold the base64 MD5 of the manifests' exact bytes, checked
//! before parsing. Data-file keys in the manifest are full keys from the bucket root; they are
//! resolved relative to wherever the `AWSDynamoDB` folder now is. A folder with data files but no
//! manifest is accepted as *unverified*. Per-file MD5s and item counts are checked while loading.
//!
//! Both output formats are read (`DYNAMODB_JSON`, `data/*.json.gz`, and `ION`, `data/*.ion.gz`),
//! and both export types: an incremental export (`INCREMENTAL_EXPORT`, a catch-up *window*) has
//! `exportFromTime`/`exportToTime` and its view type instead of `exportTime`, and its data files
//! live in the `AWSDynamoDB/data/` folder every incremental export under the prefix shares, so
//! they are taken from its `manifest-files.json` only, never by listing that folder.
//! [`locate_windows`] finds every export under a prefix (a folder of windows).

use base64::Engine;
use md5::{Digest, Md5};
use serde::Deserialize;

use crate::store::{ObjectMeta, ObjectStore};
use crate::{Error, Result};

/// The fields of `manifest-summary.json` Ferry uses; unknown fields are ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct ExportSummary {
    /// The export's ARN; its last segment is the ExportId.
    pub export_arn: Option<String>,
    /// The source table's ARN.
    pub table_arn: Option<String>,
    /// The point in time the export reflects (full exports).
    pub export_time: Option<String>,
    /// Total items across data files.
    pub item_count: Option<u64>,
    /// `DYNAMODB_JSON` or `ION`.
    pub output_format: Option<String>,
    /// `FULL_EXPORT` (default when missing) or `INCREMENTAL_EXPORT`.
    pub export_type: Option<String>,
    /// Billed size.
    pub billed_size_bytes: Option<u64>,
    /// Incremental exports: the window's start (inclusive).
    pub export_from_time: Option<String>,
    /// Incremental exports: the window's end (exclusive).
    pub export_to_time: Option<String>,
    /// Incremental exports: `NEW_AND_OLD_IMAGES` or `NEW_IMAGE` (AWS's docs also say
    /// `NEW_IMAGES`).
    pub output_view: Option<String>,
}

impl ExportSummary {
    /// The table name from `tableArn` (`arn:…:table/<Name>`).
    pub fn table_name(&self) -> Option<&str> {
        let arn = self.table_arn.as_deref()?;
        let (_, name) = arn.rsplit_once(":table/")?;
        let name = name.split('/').next()?;
        (!name.is_empty()).then_some(name)
    }

    /// Whether this is an incremental export (a catch-up window).
    pub fn is_incremental(&self) -> bool {
        self.export_type.as_deref() == Some(INCREMENTAL_EXPORT)
    }

    /// Whether the data files are Amazon Ion.
    pub fn is_ion(&self) -> bool {
        self.output_format.as_deref() == Some("ION")
    }

    /// The ExportId, the last segment of `exportArn`.
    pub fn export_id(&self) -> Option<&str> {
        self.export_arn
            .as_deref()?
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
    }
}

/// `exportType` of an incremental export.
pub const INCREMENTAL_EXPORT: &str = "INCREMENTAL_EXPORT";

/// Microseconds since 1970 of an ISO-8601 time as manifests write it (`2024-06-11T09:00:00.000Z`).
pub fn micros_of(time: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(time.trim())
        .ok()
        .map(|t| t.timestamp_micros())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestFileLine {
    item_count: u64,
    md5_checksum: String,
    data_file_s3_key: String,
}

/// One data file of the export: one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFile {
    /// Shard id, derived from the key (the file name without `.json.gz`), stable across plans.
    pub shard_id: String,
    /// The object's key in the store.
    pub key: String,
    /// Items in the file per the manifest; `None` for an unverified export.
    pub item_count: Option<u64>,
    /// Base64 MD5 of the stored bytes per the manifest; `None` for an unverified export.
    pub md5_checksum: Option<String>,
    /// Object size in bytes.
    pub size: u64,
}

/// A located export.
#[derive(Clone, Debug)]
pub struct ExportListing {
    /// Where it is, for messages and the ledger.
    pub location: String,
    /// The export folder's key prefix (ends in `/`, or empty).
    pub export_prefix: String,
    /// The parsed summary; `None` without a manifest.
    pub summary: Option<ExportSummary>,
    /// Data files in manifest order (key order when unverified).
    pub files: Vec<DataFile>,
    /// Whether the manifests were present and their checksums held.
    pub verified: bool,
    /// Things the user should know (missing checksum files, no manifest).
    pub warnings: Vec<String>,
}

impl ExportListing {
    /// Total items per the manifest.
    pub fn manifest_items(&self) -> Option<u64> {
        self.files.iter().map(|f| f.item_count).sum()
    }

    /// Total stored bytes of the data files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Base64 MD5 of `bytes`, the form DynamoDB manifests use.
pub fn md5_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

/// Hex MD5 of `bytes` (for derived identifiers).
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Finds the one export under `prefix` in `store` and reads its manifests.
pub async fn locate_export(store: &dyn ObjectStore, prefix: &str) -> Result<ExportListing> {
    let objects = store.list(prefix).await?;
    let summaries: Vec<&ObjectMeta> = objects
        .iter()
        .filter(|o| o.key == "manifest-summary.json" || o.key.ends_with("/manifest-summary.json"))
        .collect();
    match summaries.as_slice() {
        [] => unverified_listing(store, prefix, &objects),
        [summary] => {
            let export_prefix = summary
                .key
                .trim_end_matches("manifest-summary.json")
                .to_string();
            verified_listing(store, &export_prefix, &objects).await
        }
        many => Err(Error::ExportNotFound(format!(
            "{} exports under {}: {}; point --export at one of them",
            many.len(),
            store.location(prefix),
            many.iter()
                .map(|o| o.key.trim_end_matches("/manifest-summary.json"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Every export under `prefix` (a folder or prefix holding several incremental exports, each
/// `AWSDynamoDB/<ExportId>/` with its manifests), in key order; or the one export `prefix` is.
pub async fn locate_windows(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<ExportListing>> {
    let objects = store.list(prefix).await?;
    let mut summaries: Vec<String> = objects
        .iter()
        .filter(|o| o.key == "manifest-summary.json" || o.key.ends_with("/manifest-summary.json"))
        .map(|o| o.key.trim_end_matches("manifest-summary.json").to_string())
        .collect();
    summaries.sort();
    if summaries.is_empty() {
        return Err(Error::ExportNotFound(format!(
            "no manifest-summary.json under {}: point --export at incremental exports (…/AWSDynamoDB/<ExportId>/, or a folder or prefix holding them)",
            store.location(prefix)
        )));
    }
    let mut listings = Vec::with_capacity(summaries.len());
    for export_prefix in summaries {
        listings.push(verified_listing(store, &export_prefix, &objects).await?);
    }
    Ok(listings)
}

async fn read_checked(
    store: &dyn ObjectStore,
    objects: &[ObjectMeta],
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<(Vec<u8>, bool)> {
    let bytes = store.get(key).await?;
    let stem = key.trim_end_matches(".json");
    let checksum_key = [".md5", ".checksum"]
        .iter()
        .map(|ext| format!("{stem}{ext}"))
        .find(|candidate| objects.iter().any(|o| &o.key == candidate));
    let Some(checksum_key) = checksum_key else {
        warnings.push(format!(
            "{} has no .md5 or .checksum file: not verified",
            store.location(key)
        ));
        return Ok((bytes, false));
    };
    let expected = String::from_utf8_lossy(&store.get(&checksum_key).await?)
        .trim()
        .to_string();
    let actual = md5_base64(&bytes);
    if expected != actual {
        return Err(Error::Checksum {
            location: store.location(key),
            reason: format!(
                "{} says {expected}, the file's MD5 is {actual}",
                store.location(&checksum_key)
            ),
        });
    }
    Ok((bytes, true))
}

async fn verified_listing(
    store: &dyn ObjectStore,
    export_prefix: &str,
    objects: &[ObjectMeta],
) -> Result<ExportListing> {
    let mut warnings = Vec::new();
    let summary_key = format!("{export_prefix}manifest-summary.json");
    let (summary_bytes, summary_ok) =
        read_checked(store, objects, &summary_key, &mut warnings).await?;
    let summary: ExportSummary =
        serde_json::from_slice(&summary_bytes).map_err(|e| Error::Manifest {
            location: store.location(&summary_key),
            reason: e.to_string(),
        })?;
    let manifest_error = |reason: String| Error::Manifest {
        location: store.location(&summary_key),
        reason,
    };
    if let Some(format) = summary.output_format.as_deref() {
        if format != "DYNAMODB_JSON" && format != "ION" {
            return Err(manifest_error(format!(
                "outputFormat {format} is not one Ferry reads (DYNAMODB_JSON or ION)"
            )));
        }
    }
    if let Some(kind) = summary.export_type.as_deref() {
        if kind != "FULL_EXPORT" && kind != INCREMENTAL_EXPORT {
            return Err(manifest_error(format!(
                "exportType {kind} is not one Ferry reads (FULL_EXPORT or INCREMENTAL_EXPORT)"
            )));
        }
    }
    if summary.is_incremental() {
        for (field, value) in [
            ("exportFromTime", &summary.export_from_time),
            ("exportToTime", &summary.export_to_time),
        ] {
            match value.as_deref() {
                Some(time) if micros_of(time).is_some() => {}
                Some(time) => {
                    return Err(manifest_error(format!(
                        "{field} {time:?} is not an ISO-8601 time"
                    )))
                }
                None => {
                    return Err(manifest_error(format!(
                        "an incremental export without {field}"
                    )))
                }
            }
        }
        if let Some(view) = summary.output_view.as_deref() {
            if !matches!(view, "NEW_AND_OLD_IMAGES" | "NEW_IMAGE" | "NEW_IMAGES") {
                return Err(manifest_error(format!(
                    "outputView {view} is not NEW_AND_OLD_IMAGES or NEW_IMAGE"
                )));
            }
        }
    }

    let files_key = format!("{export_prefix}manifest-files.json");
    if !objects.iter().any(|o| o.key == files_key) {
        return Err(Error::Manifest {
            location: store.location(&files_key),
            reason: "manifest-files.json is missing".into(),
        });
    }
    let (files_bytes, files_ok) = read_checked(store, objects, &files_key, &mut warnings).await?;
    let files_text = std::str::from_utf8(&files_bytes).map_err(|e| Error::Manifest {
        location: store.location(&files_key),
        reason: e.to_string(),
    })?;

    // Data keys are full keys from the bucket root; re-anchor them at this export's AWSDynamoDB folder.
    let anchor = export_prefix
        .rfind("AWSDynamoDB/")
        .map(|at| export_prefix[..at + "AWSDynamoDB/".len()].to_string());
    // An incremental export's data files are in the shared `AWSDynamoDB/data/` folder, which the
    // listing of the export's own folder does not reach.
    let shared_data = match (&anchor, summary.is_incremental()) {
        (Some(anchor), true)
            if !objects
                .iter()
                .any(|o| o.key.starts_with(&format!("{anchor}data/"))) =>
        {
            store.list(&format!("{anchor}data/")).await?
        }
        _ => Vec::new(),
    };
    let mut files = Vec::new();
    for (index, line) in files_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: ManifestFileLine = serde_json::from_str(line).map_err(|e| Error::Manifest {
            location: format!("{} line {}", store.location(&files_key), index + 1),
            reason: e.to_string(),
        })?;
        let key = match (&anchor, entry.data_file_s3_key.rfind("AWSDynamoDB/")) {
            (Some(anchor), Some(at)) => format!(
                "{anchor}{}",
                &entry.data_file_s3_key[at + "AWSDynamoDB/".len()..]
            ),
            _ => {
                let name = entry
                    .data_file_s3_key
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                format!("{export_prefix}data/{name}")
            }
        };
        let Some(meta) = objects.iter().chain(&shared_data).find(|o| o.key == key) else {
            return Err(Error::Manifest {
                location: format!("{} line {}", store.location(&files_key), index + 1),
                reason: format!("data file {} is missing", store.location(&key)),
            });
        };
        files.push(DataFile {
            shard_id: shard_id_of(&key),
            key,
            item_count: Some(entry.item_count),
            md5_checksum: Some(entry.md5_checksum),
            size: meta.size,
        });
    }
    check_unique_shards(&files)?;
    let listed: u64 = files.iter().filter_map(|f| f.item_count).sum();
    if let Some(total) = summary.item_count {
        if total != listed {
            return Err(Error::Checksum {
                location: store.location(&summary_key),
                reason: format!(
                    "itemCount is {total} but manifest-files.json lists {listed} items"
                ),
            });
        }
    }
    Ok(ExportListing {
        location: store.location(export_prefix),
        export_prefix: export_prefix.to_string(),
        summary: Some(summary),
        files,
        verified: summary_ok && files_ok,
        warnings,
    })
}

fn unverified_listing(
    store: &dyn ObjectStore,
    prefix: &str,
    objects: &[ObjectMeta],
) -> Result<ExportListing> {
    let files: Vec<DataFile> = objects
        .iter()
        .filter(|o| is_data_file(&o.key))
        .map(|o| DataFile {
            shard_id: shard_id_of(&o.key),
            key: o.key.clone(),
            item_count: None,
            md5_checksum: None,
            size: o.size,
        })
        .collect();
    if files.is_empty() {
        return Err(Error::ExportNotFound(format!(
            "no manifest-summary.json and no data files (.json.gz, .ion.gz, or a .json scan dump) under {}",
            store.location(prefix)
        )));
    }
    check_unique_shards(&files)?;
    let warning = format!(
        "no manifest under {}: loading {} data files unverified (no item counts or checksums to reconcile)",
        store.location(prefix),
        files.len()
    );
    Ok(ExportListing {
        location: store.location(prefix),
        export_prefix: prefix.to_string(),
        summary: None,
        files,
        verified: false,
        warnings: vec![warning],
    })
}

/// Whether a key names a data file Ferry reads without a manifest: an export's data file
/// (DynamoDB JSON or Ion, gzipped), or a scan dump (`.json`, gzipped or not).
fn is_data_file(key: &str) -> bool {
    key.ends_with(".json.gz") || key.ends_with(".ion.gz") || key.ends_with(".json")
}

/// The shard id of a data file: its file name without `.json.gz` (or `.ion.gz`).
pub fn shard_id_of(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    let name = name.trim_end_matches(".gz");
    name.strip_suffix(".json")
        .or_else(|| name.strip_suffix(".ion"))
        .unwrap_or(name)
        .to_string()
}

fn check_unique_shards(files: &[DataFile]) -> Result<()> {
    let mut ids: Vec<&str> = files.iter().map(|f| f.shard_id.as_str()).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::ExportNotFound(format!(
            "two data files share the name {}: point --export at one export",
            pair[0]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use std::path::Path;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn export(root: &Path, checksum_ext: &str, tamper: bool) {
        let dir = "exp/AWSDynamoDB/01700000000000-0a1b2c3d";
        write(root, &format!("{dir}/data/aaaa.json.gz"), b"gzbytes");
        write(root, &format!("{dir}/data/bbbb.json.gz"), b"");
        let files = format!(
            "{{\"itemCount\":2,\"md5Checksum\":\"{}\",\"etag\":\"x-1\",\"dataFileS3Key\":\"old/AWSDynamoDB/01700000000000-0a1b2c3d/data/aaaa.json.gz\"}}\n\
             {{\"itemCount\":0,\"md5Checksum\":\"{}\",\"etag\":\"y-1\",\"dataFileS3Key\":\"old/AWSDynamoDB/01700000000000-0a1b2c3d/data/bbbb.json.gz\"}}\n",
            md5_base64(b"gzbytes"),
            md5_base64(b"")
        );
        let summary = "{\"version\":\"2020-06-30\",\"exportArn\":\"arn:aws:dynamodb:us-east-1:1:table/Orders/export/01700000000000-0a1b2c3d\",\"tableArn\":\"arn:aws:dynamodb:us-east-1:1:table/Orders\",\"itemCount\":2,\"outputFormat\":\"DYNAMODB_JSON\",\"newField\":1}";
        write(
            root,
            &format!("{dir}/manifest-files.json"),
            files.as_bytes(),
        );
        write(
            root,
            &format!("{dir}/manifest-summary.json"),
            summary.as_bytes(),
        );
        let files_md5 = if tamper {
            md5_base64(b"other")
        } else {
            md5_base64(files.as_bytes())
        };
        write(
            root,
            &format!("{dir}/manifest-files.{checksum_ext}"),
            files_md5.as_bytes(),
        );
        write(
            root,
            &format!("{dir}/manifest-summary.{checksum_ext}"),
            md5_base64(summary.as_bytes()).as_bytes(),
        );
    }

    #[tokio::test]
    async fn finds_the_export_from_a_parent_and_reanchors_keys() {
        for ext in ["md5", "checksum"] {
            let dir = tempfile::tempdir().unwrap();
            export(dir.path(), ext, false);
            let (store, prefix) = LocalStore::for_export_path(dir.path()).unwrap();
            let listing = locate_export(&store, &prefix).await.unwrap();
            assert!(listing.verified, "{ext}: {:?}", listing.warnings);
            assert_eq!(
                listing.summary.as_ref().unwrap().table_name(),
                Some("Orders")
            );
            assert_eq!(
                listing.summary.as_ref().unwrap().export_id(),
                Some("01700000000000-0a1b2c3d")
            );
            assert_eq!(listing.files.len(), 2);
            assert_eq!(
                listing.files[0].key,
                "exp/AWSDynamoDB/01700000000000-0a1b2c3d/data/aaaa.json.gz"
            );
            assert_eq!(listing.files[0].shard_id, "aaaa");
            assert_eq!(listing.files[0].size, 7);
            assert_eq!(listing.files[1].item_count, Some(0));
            assert_eq!(listing.manifest_items(), Some(2));

            // Pointing at the export folder itself finds the same files.
            let (store, prefix) = LocalStore::for_export_path(
                &dir.path().join("exp/AWSDynamoDB/01700000000000-0a1b2c3d"),
            )
            .unwrap();
            let again = locate_export(&store, &prefix).await.unwrap();
            assert_eq!(again.files.len(), 2);
        }
    }

    #[tokio::test]
    async fn a_tampered_manifest_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        export(dir.path(), "md5", true);
        let (store, prefix) = LocalStore::for_export_path(dir.path()).unwrap();
        let err = locate_export(&store, &prefix)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifest-files.json"), "{err}");
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[tokio::test]
    async fn data_without_manifest_is_unverified() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data/x1.json.gz", b"abc");
        let (store, prefix) = LocalStore::for_export_path(dir.path()).unwrap();
        let listing = locate_export(&store, &prefix).await.unwrap();
        assert!(!listing.verified);
        assert_eq!(listing.files[0].item_count, None);
        assert_eq!(listing.warnings.len(), 1);
        let empty = tempfile::tempdir().unwrap();
        let (store, prefix) = LocalStore::for_export_path(empty.path()).unwrap();
        assert!(matches!(
            locate_export(&store, &prefix).await,
            Err(Error::ExportNotFound(_))
        ));
    }

    #[tokio::test]
    async fn two_exports_under_one_parent_are_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        export(&dir.path().join("one"), "md5", false);
        export(&dir.path().join("two"), "md5", false);
        let (store, prefix) = LocalStore::for_export_path(dir.path()).unwrap();
        let err = locate_export(&store, &prefix)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 exports"), "{err}");
    }
}

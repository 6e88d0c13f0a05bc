//! Scan dumps at plan time: what each data file of an export without a manifest is (a native data
//! file, `aws dynamodb scan` output, or a JSON array of items), and what the report must say
//! about it: a plain-JSON dump (the migration guide's script) lost DynamoDB's types and sent its
//! numbers through Python floats, so it cannot be exact. The reading itself is the worker's
//! ([`ferry_worker::dump`]).

use std::io::Read;

use ferry_shared::manifest::ExportListing;
use ferry_shared::store::ObjectStore;
use ferry_worker::dump::{is_gzip, kind_of, TextKind};
use tokio::io::AsyncReadExt;

use crate::Result;

/// Bytes read from the start of each file to tell its kind.
const SNIFF_BYTES: usize = 64 * 1024;

/// What a dump is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpKind {
    /// Typed DynamoDB JSON items (`aws dynamodb scan --output json`, or an array of typed items).
    Typed,
    /// A JSON array of plain items: types and number exactness lost.
    Plain,
}

/// The dump kind of a file starting with `start` (decompressed), or `None` for a native data file.
pub fn dump_kind(start: &[u8]) -> Option<DumpKind> {
    match kind_of(start) {
        TextKind::Lines => None,
        TextKind::ScanOutput => Some(DumpKind::Typed),
        TextKind::ItemArray => Some(if first_value_typed(start) {
            DumpKind::Typed
        } else {
            DumpKind::Plain
        }),
    }
}

/// Whether the first attribute of the array's first item holds a typed value (`{"S":…}`).
fn first_value_typed(start: &[u8]) -> bool {
    let text = String::from_utf8_lossy(start);
    let Some(colon) = text.find(':') else {
        return false;
    };
    let rest = text[colon + 1..].trim_start();
    let Some(inner) = rest.strip_prefix('{') else {
        return false;
    };
    let inner = inner.trim_start();
    [
        "\"S\"", "\"N\"", "\"B\"", "\"BOOL\"", "\"NULL\"", "\"M\"", "\"L\"", "\"SS\"", "\"NS\"",
        "\"BS\"",
    ]
    .iter()
    .any(|d| inner.starts_with(d))
}

/// The warnings for the scan dumps among `listing`'s files (an export without a manifest).
pub async fn warnings(store: &dyn ObjectStore, listing: &ExportListing) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if listing.verified || listing.summary.is_some() {
        return Ok(out);
    }
    for file in &listing.files {
        let mut stream = store.open(&file.key).await?;
        let mut start = Vec::with_capacity(SNIFF_BYTES);
        (&mut stream)
            .take(SNIFF_BYTES as u64)
            .read_to_end(&mut start)
            .await
            .map_err(|source| ferry_shared::Error::Io {
                location: store.location(&file.key),
                source,
            })?;
        let text = if is_gzip(&start) {
            let mut decoded = Vec::new();
            // A prefix of a gzip stream: read what it gives.
            let _ = flate2::read::MultiGzDecoder::new(&start[..])
                .take(SNIFF_BYTES as u64)
                .read_to_end(&mut decoded);
            decoded
        } else {
            start
        };
        let location = store.location(&file.key);
        match dump_kind(&text) {
            None => {}
            Some(DumpKind::Typed) => out.push(format!(
                "{location} is a scan dump of typed items (`aws dynamodb scan --output json`): its values load exactly, but it has no manifest, so the run cannot be reconciled against one (unverified)"
            )),
            Some(DumpKind::Plain) => out.push(format!(
                "{location} is a JSON array of plain items (the migration guide's boto3 scan script): DynamoDB's types are not in it (sets, lists and binary values all read as lists or strings) and its numbers went through Python floats (its DecimalEncoder), so this source CANNOT BE EXACT; it has no manifest either (unverified). Export the table (ExportTableToPointInTime) for an exact copy"
            )),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_told_apart_by_their_start() {
        assert_eq!(dump_kind(b"{\"Item\":{\"a\":{\"S\":\"x\"}}}\n"), None);
        assert_eq!(
            dump_kind(b"{\n  \"Items\": [ {\"a\": {\"S\": \"x\"}} ]"),
            Some(DumpKind::Typed)
        );
        assert_eq!(
            dump_kind(b"[\n  {\n    \"pk\": {\n      \"S\": \"x\"}}]"),
            Some(DumpKind::Typed)
        );
        assert_eq!(
            dump_kind(b"[\n  {\n    \"pk\": \"USER#1\", \"qty\": 3}]"),
            Some(DumpKind::Plain)
        );
        assert_eq!(
            dump_kind(b"[{\"pk\": {\"name\": \"x\"}}]"),
            Some(DumpKind::Plain)
        );
    }
}

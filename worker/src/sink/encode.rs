//! The rayon stage of a load: one block of lines → Arrow batches (table mode through
//! [`crate::decode`], routed mode through [`crate::route`]) → per table, its rows in the sink's
//! wire format (binary COPY tuples, CSV lines or text rows), each ending with the chunk's
//! provenance, plus the keys a presence proof needs. Pure CPU, no IO: blocks encode in parallel.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use ferry_shared::schema::{PgType, TableSchema};

use super::{Key, KeyValue, Payload, TableRows};
use crate::change::{parse_json_change_line, ChangeRecord};
use crate::convert::{cast, CastSpec, Cell};
use crate::decode::{Decoder, RawBlock, Reject, RejectKind};
use crate::item::Attributes;
use crate::normal::{ItemDigest, ItemPlan};
use crate::route::Router;
use crate::target::LoadPath;
use crate::{Result, WorkerError};

/// A block, encoded.
#[derive(Debug)]
pub struct EncodedBlock {
    /// Per table of the run, its rows of the block (tables without rows left out).
    pub tables: Vec<TableRows>,
    /// Rows over all tables.
    pub rows: u64,
    /// Lines that could not be loaded.
    pub rejects: Vec<Reject>,
    /// Values spilled to the overflow column.
    pub spilled: u64,
    /// Items a routing filter skipped.
    pub filtered: u64,
}

enum Conversion {
    Table(Decoder),
    Routed(Box<Router>),
    /// Change records of an incremental export ([`super::apply`]).
    Changes(Box<ChangeEncoder>),
}

/// Encodes blocks of one run for one load path. Cheap to share across threads.
pub struct BlockEncoder {
    conversion: Conversion,
    tables: Arc<Vec<TableSchema>>,
    path: LoadPath,
    /// Every row's key is kept (to name a conflicting key where the server does not).
    keep_keys: bool,
    /// Per table, the Arrow schema of its Parquet files (the Parquet path only).
    parquet_schemas: Vec<arrow_schema::SchemaRef>,
    /// Per table, how its rows become items, when each block's digest is computed.
    digests: Option<Arc<Vec<ItemPlan>>>,
}

impl std::fmt::Debug for BlockEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockEncoder")
            .field("tables", &self.tables.len())
            .field("path", &self.path)
            .finish()
    }
}

impl BlockEncoder {
    /// An encoder for a run whose schema is `schema` (table mode, or routed when it has routing
    /// rules), writing for `path`. `export_time` is the manifest's, for TTL filters.
    pub fn new(schema: &TableSchema, export_time: Option<&str>, path: LoadPath) -> Result<Self> {
        let (conversion, tables) = match &schema.routing {
            None => (
                Conversion::Table(Decoder::new(Arc::new(schema.clone()))),
                vec![schema.clone()],
            ),
            Some(routing) => {
                let keys: Vec<String> = schema.key_columns().map(|c| c.name.clone()).collect();
                let router = Router::new(routing, &keys, export_time, schema.numeric_limit)
                    .map_err(WorkerError::ledger)?;
                let tables = router.tables().to_vec();
                (Conversion::Routed(Box::new(router)), tables)
            }
        };
        let parquet_schemas = if path == LoadPath::Parquet {
            let table_mode = schema.routing.is_none();
            tables
                .iter()
                .map(|t| super::parquet::parquet_schema(t, table_mode))
                .collect()
        } else {
            Vec::new()
        };
        Ok(BlockEncoder {
            conversion,
            parquet_schemas,
            tables: Arc::new(tables),
            path,
            // Only the autocommit path needs them: PostgreSQL's unique violation names the key.
            keep_keys: path == LoadPath::CsvCopyAutocommit,
            digests: None,
        })
    }

    /// This encoder, computing the digest of each table's items per block
    /// ([`TableRows::digest`]) from the rows it encodes, in the text form a server returns them
    /// in ([`crate::normal`]). A change encoder computes none.
    pub fn with_digests(mut self, schema: &TableSchema) -> Self {
        if !self.applies_changes() {
            self.digests = Some(Arc::new(crate::normal::item_plans(schema)));
        }
        self
    }

    /// This encoder, keeping every row's line and key in [`TableRows::keys`] (to find the lines
    /// of a key after the load, [`crate::reread`]).
    pub fn keeping_keys(mut self) -> Self {
        self.keep_keys = true;
        self
    }

    /// An encoder for the change records of an incremental export applied to a run whose schema
    /// is `schema` (the full run's: the same columns, routing and casts). `window_end` is the
    /// window's `exportToTime`, for TTL filters.
    pub fn for_changes(
        schema: &TableSchema,
        window_end: Option<&str>,
        path: LoadPath,
    ) -> Result<Self> {
        let changes = ChangeEncoder::new(schema, window_end)?;
        Ok(BlockEncoder {
            tables: changes.tables().clone(),
            conversion: Conversion::Changes(Box::new(changes)),
            parquet_schemas: Vec::new(),
            path,
            keep_keys: false,
            digests: None,
        })
    }

    /// Whether this encoder writes change records (an incremental export) rather than rows.
    pub fn applies_changes(&self) -> bool {
        matches!(self.conversion, Conversion::Changes(_))
    }

    /// The tables rows go to, in the order of [`TableRows::table`].
    pub fn tables(&self) -> &Arc<Vec<TableSchema>> {
        &self.tables
    }

    /// Decodes (or routes) and encodes `block`; every row carries `provenance`.
    pub fn encode(&self, block: &RawBlock, provenance: i64) -> Result<EncodedBlock> {
        let (batches, line_numbers, rows, rejects, spilled, filtered) = match &self.conversion {
            Conversion::Changes(changes) => return changes.encode(block, provenance),
            Conversion::Table(decoder) => {
                let decoded = decoder.decode(block);
                let rows = decoded.batch.num_rows() as u64;
                (
                    vec![decoded.batch],
                    vec![decoded.line_numbers],
                    rows,
                    decoded.rejects,
                    decoded.spilled,
                    0,
                )
            }
            Conversion::Routed(router) => {
                let routed = router.route(block);
                (
                    routed.batches,
                    routed.line_numbers,
                    routed.rows,
                    routed.rejects,
                    0,
                    routed.filtered,
                )
            }
        };
        let mut tables = Vec::new();
        for (index, ((schema, batch), lines)) in self
            .tables
            .iter()
            .zip(&batches)
            .zip(&line_numbers)
            .enumerate()
        {
            if batch.num_rows() == 0 {
                continue;
            }
            tables.push(self.encode_table(index, schema, batch, lines, provenance)?);
        }
        Ok(EncodedBlock {
            tables,
            rows,
            rejects,
            spilled,
            filtered,
        })
    }

    fn encode_table(
        &self,
        index: usize,
        schema: &TableSchema,
        batch: &RecordBatch,
        lines: &[u64],
        provenance: i64,
    ) -> Result<TableRows> {
        let payload = match self.path {
            LoadPath::BinaryCopyInTransaction => {
                let mut out = Vec::with_capacity(batch.get_array_memory_size());
                crate::copy::encode_batch(schema, batch, Some(provenance), &mut out)?;
                Payload::Copy(out)
            }
            LoadPath::CsvCopyAutocommit => {
                let mut out = Vec::with_capacity(batch.get_array_memory_size());
                crate::csv::encode_batch_csv(schema, batch, Some(provenance), &mut out);
                Payload::Copy(out)
            }
            LoadPath::InsertInTransaction => {
                Payload::Rows(crate::csv::batch_texts(schema, batch, Some(provenance)))
            }
            LoadPath::Parquet => Payload::Batch(super::parquet::to_parquet_batch(
                schema,
                &self.parquet_schemas[index],
                batch,
                provenance,
            )?),
        };
        let keys = if self.keep_keys {
            (0..batch.num_rows())
                .map(|row| (lines[row], key_of_row(schema, batch, row)))
                .collect()
        } else {
            Vec::new()
        };
        let digest = self
            .digests
            .as_ref()
            .and_then(|plans| plans.get(index))
            .map(|plan| digest_batch(plan, schema, batch));
        Ok(TableRows {
            table: index,
            rows: batch.num_rows() as u64,
            payload,
            first_key: Some((lines[0], key_of_row(schema, batch, 0))),
            keys,
            digest,
        })
    }
}

/// The digest of the items `batch`'s rows stand for: each row's values in PostgreSQL's text form
/// ([`crate::csv::field_text`]), as a server returns them, turned into an item by `plan`.
fn digest_batch(plan: &ItemPlan, schema: &TableSchema, batch: &RecordBatch) -> ItemDigest {
    use arrow_array::Array as _;
    let types = crate::csv::batch_types(schema);
    // Only the columns the item reads are written out.
    let mut used = vec![false; types.len()];
    for column in &plan.columns {
        if let Some(u) = used.get_mut(column.position) {
            *u = true;
        }
    }
    if let Some((_, position, _)) = &plan.rest {
        if let Some(u) = used.get_mut(*position) {
            *u = true;
        }
    }
    // Per column: unused (None), read as it is (text, numbers, JSON), or written as text.
    enum Read<'b> {
        Str(&'b arrow_array::StringArray),
        Text(PgType, &'b dyn arrow_array::Array),
    }
    let readers: Vec<Option<Read<'_>>> = types
        .iter()
        .enumerate()
        .map(|(index, pg_type)| {
            let array = batch.column(index);
            used[index].then(|| match pg_type {
                PgType::Text | PgType::Jsonb | PgType::Numeric | PgType::NumericScaled { .. } => {
                    Read::Str(array.as_string::<i32>())
                }
                _ => Read::Text(*pg_type, array.as_ref()),
            })
        })
        .collect();
    let mut digest = ItemDigest::default();
    let mut owned: Vec<String> = vec![String::new(); types.len()];
    for row in 0..batch.num_rows() {
        for (reader, text) in readers.iter().zip(owned.iter_mut()) {
            if let Some(Read::Text(pg_type, array)) = reader {
                if array.is_valid(row) {
                    text.clear();
                    crate::csv::field_text(*pg_type, *array, row, text);
                }
            }
        }
        let texts: Vec<Option<&str>> = readers
            .iter()
            .zip(&owned)
            .map(|(reader, text)| match reader {
                None => None,
                Some(Read::Str(array)) => array.is_valid(row).then(|| array.value(row)),
                Some(Read::Text(_, array)) => array.is_valid(row).then_some(text.as_str()),
            })
            .collect();
        digest.add_hash(&crate::normal::row_hash(plan, &texts));
    }
    digest
}

/// The key of `row` of `batch` (laid out by [`crate::decode::arrow_schema`]).
pub fn key_of_row(schema: &TableSchema, batch: &RecordBatch, row: usize) -> Key {
    schema
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key)
        .map(|(i, c)| match c.pg_type {
            PgType::Bytea => {
                KeyValue::Bytes(batch.column(i).as_binary::<i32>().value(row).to_vec())
            }
            _ => KeyValue::Text(batch.column(i).as_string::<i32>().value(row).to_string()),
        })
        .collect()
}

/// Parses one line of an incremental export, DynamoDB JSON or Ion (sniffed by its first bytes).
pub fn parse_change_line(line: &[u8]) -> Result<ChangeRecord<'_>, String> {
    if crate::ion::is_ion_line(line) {
        crate::ion::parse_change_line(line)
    } else {
        parse_json_change_line(line)
    }
}

/// One table's changes from a block of change records.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Rows to insert or update, in line order.
    pub upserts: Vec<Upsert>,
    /// Keys to delete.
    pub deletes: Vec<Delete>,
}

/// A row to upsert.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// The change record's line.
    pub line_no: u64,
    /// The row's key.
    pub key: Key,
    /// Every column's value as text (`None`: NULL), in [`TableSchema::copy_column_list`] order.
    pub values: Vec<Option<String>>,
    /// The change record as read (kept for a deferral).
    pub raw: Arc<[u8]>,
}

/// A key to delete.
#[derive(Debug, Clone)]
pub struct Delete {
    /// The change record's line.
    pub line_no: u64,
    /// The key.
    pub key: Key,
    /// The change record as read (kept for a deferral).
    pub raw: Arc<[u8]>,
}

/// How a change record's image becomes rows (the full run's way).
enum ChangeConversion {
    Table(Decoder),
    Routed(Box<Router>),
}

/// Where an item's key can have a row: `(table, the key's values there)`.
type Homes = Vec<(usize, Key)>;

/// The rayon stage for change records: parse, convert each `NewImage` the full run's way, and
/// turn each record into per-table upserts and deletes. Pure CPU, no IO.
pub struct ChangeEncoder {
    conversion: ChangeConversion,
    tables: Arc<Vec<TableSchema>>,
    /// Table mode: how each key column's value is cast (its key values for deletes).
    key_casts: Vec<(String, CastSpec)>,
}

impl ChangeEncoder {
    /// An encoder for the full run whose schema is `schema`; `window_end` is the window's
    /// `exportToTime` (TTL filters compare with it).
    pub fn new(schema: &TableSchema, window_end: Option<&str>) -> Result<ChangeEncoder> {
        match &schema.routing {
            None => {
                let key_casts = schema
                    .key_columns()
                    .map(|c| {
                        let mut spec = CastSpec::new(c.pg_type);
                        spec.numeric_limit = schema.numeric_limit;
                        (c.name.clone(), spec)
                    })
                    .collect();
                Ok(ChangeEncoder {
                    conversion: ChangeConversion::Table(Decoder::new(Arc::new(schema.clone()))),
                    tables: Arc::new(vec![schema.clone()]),
                    key_casts,
                })
            }
            Some(routing) => {
                let keys: Vec<String> = schema.key_columns().map(|c| c.name.clone()).collect();
                let router = Router::new(routing, &keys, window_end, schema.numeric_limit)
                    .map_err(WorkerError::ledger)?;
                router.check_for_changes().map_err(WorkerError::ledger)?;
                Ok(ChangeEncoder {
                    tables: Arc::new(router.tables().to_vec()),
                    conversion: ChangeConversion::Routed(Box::new(router)),
                    key_casts: Vec::new(),
                })
            }
        }
    }

    /// The run's tables, in the order of [`TableRows::table`].
    pub fn tables(&self) -> &Arc<Vec<TableSchema>> {
        &self.tables
    }

    /// Where an item with the key attributes `keys` can have a row: `(table, key there)`.
    fn homes(&self, keys: &Attributes<'_>) -> std::result::Result<Homes, String> {
        match &self.conversion {
            ChangeConversion::Routed(router) => router.key_homes(keys),
            ChangeConversion::Table(_) => {
                let mut key = Vec::with_capacity(self.key_casts.len());
                for (name, spec) in &self.key_casts {
                    let value = keys
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v)
                        .ok_or_else(|| format!("the change record's Keys lack {name:?}"))?;
                    let cell =
                        cast(value, spec).map_err(|e| format!("key attribute {name:?}: {e}"))?;
                    key.push(match cell {
                        Cell::Text(text) => KeyValue::Text(text.into_owned()),
                        Cell::Bytes(bytes) => KeyValue::Bytes(bytes),
                        other => {
                            return Err(format!(
                                "key attribute {name:?} cannot be a key ({other:?})"
                            ))
                        }
                    });
                }
                Ok(vec![(0, key)])
            }
        }
    }

    /// Encodes a block of change records; every upserted row carries `provenance`.
    pub fn encode(&self, block: &RawBlock, provenance: i64) -> Result<EncodedBlock> {
        let mut rejects = Vec::new();
        let mut per_table: Vec<Changes> =
            (0..self.tables.len()).map(|_| Changes::default()).collect();
        let mut applied = 0u64;
        let mut filtered = 0u64;
        // Lines with a NewImage, by line: their record and where their key can be.
        let mut pending: BTreeMap<u64, (Arc<[u8]>, Homes)> = BTreeMap::new();
        let mut images = Vec::new();
        for line in &block.lines {
            let raw = block.line(line);
            let reject = |kind, reason: String| Reject {
                line_no: line.line_no,
                kind,
                reason,
                raw: raw.to_vec(),
            };
            let record = match parse_change_line(raw) {
                Ok(record) => record,
                Err(e) => {
                    rejects.push(reject(
                        RejectKind::Malformed,
                        format!("malformed change record: {e}"),
                    ));
                    continue;
                }
            };
            let homes = match self.homes(&record.keys) {
                Ok(homes) => homes,
                Err(reason) => {
                    rejects.push(reject(RejectKind::Key, reason));
                    continue;
                }
            };
            let shared: Arc<[u8]> = Arc::from(raw);
            match record.new_image {
                None => {
                    applied += 1;
                    for (table, key) in homes {
                        per_table[table].deletes.push(Delete {
                            line_no: line.line_no,
                            key,
                            raw: shared.clone(),
                        });
                    }
                }
                Some(image) => {
                    pending.insert(line.line_no, (shared, homes));
                    images.push((line.line_no, raw, Ok(image)));
                }
            }
        }
        // Every converted row: (table, line, key, values).
        let mut rows: Vec<(usize, u64, Key, Vec<Option<String>>)> = Vec::new();
        let (mut dropped, spilled) = match &self.conversion {
            ChangeConversion::Table(decoder) => {
                let decoded = decoder.decode_items(images.into_iter());
                let schema = &self.tables[0];
                let texts = crate::csv::batch_texts(schema, &decoded.batch, Some(provenance));
                for (row, values) in texts.into_iter().enumerate() {
                    let key = key_of_row(schema, &decoded.batch, row);
                    rows.push((0, decoded.line_numbers[row], key, values));
                }
                let dropped: Vec<(u64, Option<Reject>)> = decoded
                    .rejects
                    .into_iter()
                    .map(|r| (r.line_no, Some(r)))
                    .collect();
                (dropped, decoded.spilled)
            }
            ChangeConversion::Routed(router) => {
                let routed = router.route_items(images.into_iter());
                for (table, (batch, lines)) in
                    routed.batches.iter().zip(&routed.line_numbers).enumerate()
                {
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    let schema = &self.tables[table];
                    let texts = crate::csv::batch_texts(schema, batch, Some(provenance));
                    for (row, values) in texts.into_iter().enumerate() {
                        rows.push((table, lines[row], key_of_row(schema, batch, row), values));
                    }
                }
                let mut dropped: Vec<(u64, Option<Reject>)> = routed
                    .rejects
                    .into_iter()
                    .map(|r| (r.line_no, Some(r)))
                    .collect();
                filtered = routed.filtered_lines.len() as u64;
                dropped.extend(routed.filtered_lines.into_iter().map(|line| (line, None)));
                (dropped, 0)
            }
        };
        rows.sort_by_key(|(table, line, _, _)| (*table, *line));
        for (table, line_no, key, values) in rows {
            let Some((raw, homes)) = pending.remove(&line_no) else {
                continue;
            };
            // The row's key must be the record's Keys (in this table).
            if let Some((_, expected)) = homes.iter().find(|(t, _)| *t == table) {
                if *expected != key {
                    rejects.push(Reject {
                        line_no,
                        kind: RejectKind::Key,
                        reason: format!(
                            "the change record's Keys and its NewImage name different items ({} vs {})",
                            super::describe_key(&self.tables[table], expected, crate::redact::mode()),
                            super::describe_key(&self.tables[table], &key, crate::redact::mode())
                        ),
                        raw: raw.to_vec(),
                    });
                    continue;
                }
            }
            applied += 1;
            for (home, home_key) in homes {
                if home != table {
                    per_table[home].deletes.push(Delete {
                        line_no,
                        key: home_key,
                        raw: raw.clone(),
                    });
                }
            }
            per_table[table].upserts.push(Upsert {
                line_no,
                key,
                values,
                raw,
            });
        }
        // A NewImage that was rejected or filtered: the key leaves every table (a full load of
        // the new state would hold no row for it).
        dropped.sort_by_key(|(line, _)| *line);
        for (line_no, reject) in dropped {
            if let Some((raw, homes)) = pending.remove(&line_no) {
                for (table, key) in homes {
                    per_table[table].deletes.push(Delete {
                        line_no,
                        key,
                        raw: raw.clone(),
                    });
                }
            }
            if let Some(reject) = reject {
                rejects.push(reject);
            }
        }
        rejects.sort_by_key(|r| r.line_no);
        for changes in &mut per_table {
            changes.deletes.sort_by_key(|d| d.line_no);
        }
        let tables = per_table
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !c.upserts.is_empty() || !c.deletes.is_empty())
            .map(|(table, changes)| TableRows {
                table,
                rows: changes.upserts.len() as u64,
                payload: Payload::Changes(changes),
                // Nothing to prove: the chunk's changes commit with its checkpoint.
                first_key: None,
                keys: Vec::new(),
                digest: None,
            })
            .collect();
        Ok(EncodedBlock {
            tables,
            rows: applied,
            rejects,
            spilled,
            filtered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{block, test_schema};
    use ferry_shared::schema::OnTypeMismatch;

    #[test]
    fn blocks_encode_per_table_with_keys_and_provenance() {
        let mut schema = (*test_schema(OnTypeMismatch::Overflow)).clone();
        schema.provenance = true;
        let encoder = BlockEncoder::new(&schema, None, LoadPath::CsvCopyAutocommit).unwrap();
        let encoded = encoder
            .encode(
                &block(&[
                    r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"}}}"#,
                    r#"not json"#,
                    r#"{"Item":{"pk":{"S":"b"},"sk":{"N":"2.50"}}}"#,
                ]),
                77,
            )
            .unwrap();
        assert_eq!(encoded.rows, 2);
        assert_eq!(encoded.rejects.len(), 1);
        let rows = &encoded.tables[0];
        assert_eq!(
            rows.first_key,
            Some((
                1,
                vec![KeyValue::Text("a".into()), KeyValue::Text("1".into())]
            ))
        );
        assert_eq!(rows.keys[1].0, 3, "the second row is line 3");
        assert_eq!(rows.keys[1].1[1], KeyValue::Text("2.50".into()));
        let Payload::Copy(csv) = &rows.payload else {
            panic!("CSV rows")
        };
        let text = String::from_utf8(csv.clone()).unwrap();
        assert!(text.lines().all(|l| l.ends_with(",77")), "{text}");
        // The transaction path keeps no keys but the first.
        let binary = BlockEncoder::new(&schema, None, LoadPath::BinaryCopyInTransaction).unwrap();
        let encoded = binary
            .encode(&block(&[r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"}}}"#]), 1)
            .unwrap();
        assert!(encoded.tables[0].keys.is_empty());
        assert!(encoded.tables[0].first_key.is_some());
    }

    #[test]
    fn a_chunks_digest_is_its_items_whatever_the_blocks() {
        let mut schema = (*test_schema(OnTypeMismatch::Overflow)).clone();
        schema.provenance = true;
        let lines = [
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1.50"},"ss":{"SS":["y","x"]},"m":{"M":{"k":{"N":"7"}}}}}"#,
            r#"{"Item":{"pk":{"S":"b"},"sk":{"N":"2"},"b":{"B":"AAEC"}}}"#,
            r#"{"Item":{"pk":{"S":"c"},"sk":{"N":"-0.0"},"ok":{"BOOL":false}}}"#,
        ];
        let digest_of = |path, blocks: &[&[&str]]| {
            let encoder = BlockEncoder::new(&schema, None, path)
                .unwrap()
                .with_digests(&schema);
            let mut sum = ItemDigest::default();
            for lines in blocks {
                let encoded = encoder.encode(&block(lines), 5).unwrap();
                sum.merge(&encoded.tables[0].digest.expect("digests on"));
            }
            sum
        };
        let whole = digest_of(LoadPath::BinaryCopyInTransaction, &[&lines]);
        assert_eq!(whole.items, 3);
        // Split into blocks, in another order, or encoded for another path: the same digest.
        assert_eq!(
            digest_of(LoadPath::CsvCopyAutocommit, &[&lines[2..], &lines[..2]]),
            whole
        );
        // A different value gives a different digest.
        let changed = [
            lines[0],
            lines[1],
            r#"{"Item":{"pk":{"S":"c"},"sk":{"N":"-0.0"},"ok":{"BOOL":true}}}"#,
        ];
        assert_ne!(
            digest_of(LoadPath::BinaryCopyInTransaction, &[&changed]),
            whole
        );
    }
}

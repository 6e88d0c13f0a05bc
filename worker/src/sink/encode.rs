//! The rayon stage of a load: one block of lines → Arrow batches (table mode through
//! [`crate::decode`], routed mode through [`crate::route`]) → per table, its rows in the sink's
//! wire format (binary COPY tuples, CSV lines or text rows), each ending with the chunk's
//! provenance, plus the keys a presence proof needs. Pure CPU, no IO: blocks encode in parallel.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use ferry_shared::schema::{PgType, TableSchema};

use super::{Key, KeyValue, Payload, TableRows};
use crate::decode::{Decoder, RawBlock, Reject};
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
    Changes(Box<super::apply::ChangeEncoder>),
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
                    .map_err(WorkerError::Ledger)?;
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
        })
    }

    /// An encoder for the change records of an incremental export applied to a run whose schema
    /// is `schema` (the full run's: the same columns, routing and casts). `window_end` is the
    /// window's `exportToTime`, for TTL filters.
    pub fn for_changes(
        schema: &TableSchema,
        window_end: Option<&str>,
        path: LoadPath,
    ) -> Result<Self> {
        let changes = super::apply::ChangeEncoder::new(schema, window_end)?;
        Ok(BlockEncoder {
            tables: changes.tables().clone(),
            conversion: Conversion::Changes(Box::new(changes)),
            parquet_schemas: Vec::new(),
            path,
            keep_keys: false,
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
        Ok(TableRows {
            table: index,
            rows: batch.num_rows() as u64,
            payload,
            first_key: Some((lines[0], key_of_row(schema, batch, 0))),
            keys,
        })
    }
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
}

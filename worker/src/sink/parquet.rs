//! The Parquet sink: a run whose target is a Parquet dataset (a local folder or
//! `s3://bucket/prefix/`) instead of a database. The plan, shards, queue, workers and chunk driver
//! are the same; the ledger stays in a database (the embedded HeliosDB on one machine, or a
//! PostgreSQL/HeliosDB the fleet shares), and each table's rows of a chunk become one Parquet file.
//!
//! # Layout
//! ```text
//! <location>/<table>/part-<shard>-l<load>-c<chunk>.parquet   one per table and chunk
//! <location>/<table>/_manifest.json                          the committed files (finalize)
//! ```
//! A routed run writes one dataset (folder) per target table. Names starting with `_` or `.` are
//! skipped by Spark, DuckDB, Athena and pyarrow's dataset readers.
//!
//! # Types (decided at plan, recorded in every file's metadata under `ferry.schema`)
//! | column | Parquet (Arrow) |
//! |---|---|
//! | S, text | string |
//! | N: every sampled value fits | decimal128(38, s), s the sample's largest scale |
//! | N otherwise, and N keys | string: exact decimal text |
//! | B | binary |
//! | BOOL | boolean |
//! | M, L, jsonb, overflow | string: canonical JSON (numbers exact) |
//! | SS / NS / BS | list<string> / list<string: exact decimal text> / list<binary> |
//! | int2/int4/int8, float8, timestamptz (routed) | int16/int32/int64, float64, timestamp(µs, UTC) |
//! | `numeric(p,s)` (routed) | decimal128(p, s) |
//! | `_ferry_chunk` | int64: the load and chunk that wrote the row |
//!
//! A value that does not fit its decimal column (more digits or a larger scale than the sample
//! showed) is spilled to the overflow column under its own name, as in table mode on a database.
//!
//! # Exactly once
//! A file's name is derived from its shard, its load (one per shard generation, claimed in the
//! ledger before anything is written) and its chunk, so every attempt at a chunk writes the same
//! name with the same rows. A file is published whole or not at all, and never replaces another
//! ([`ferry_shared::output`]: a hidden temporary file hard-linked into place locally, S3
//! `If-None-Match: *` conditional writes). Then the chunk's checkpoint moves in the ledger. This is
//! the autocommit argument of [`super`] with "the chunk's file exists" as the presence proof:
//! - a crash after a file is published and before the checkpoint: the next loader proves the
//!   chunk's file exists (it is this load's and chunk's by its name) and does not write it again;
//! - two workers on one shard: the second publish of a name is refused; the driver finds the
//!   checkpoint moved or the file present and backs off;
//! - a file that turns out bad (MD5, item count) or a `reset`: the shard's generation moves on and
//!   the old load's files are deleted ([`ParquetFiles`]) before anything else loads;
//! - finalize deletes any file of its own run whose load is not its shard's current one (a worker
//!   that kept writing after its shard was reset) and writes each table's `_manifest.json`,
//!   listing exactly the committed files, their rows and bytes, of every run that writes the
//!   same location (`--append`): one run's finalize never removes or unlists another's files.
//!
//! Files are compressed (zstd by default, or snappy), carry page statistics, and hold row groups of
//! up to `parquet.row_group_rows` rows (and 128 MiB); a file holds one chunk (`load.chunk_lines`
//! input lines), which also bounds the memory a file is built in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::builder::Decimal128Builder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
pub use ferry_ledger::outputs::FileRecord;
use ferry_ledger::outputs::{self, OutputRecord};
use ferry_shared::config::AwsSettings;
pub use ferry_shared::config::ParquetCompression;
use ferry_shared::output::{OutputStore, PutOutcome};
use ferry_shared::schema::{DdbType, PgType, TableSchema, CHUNK_INDEX_BITS, PROVENANCE_COLUMN};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::{Checkpoint, KeyValue, Ledger, Payload, Presence, Sink, TableEnd, TableRows, Unload};
use crate::{Result, WorkerError};
use ferry_ledger::RunRecord;

/// The `ferry.outputs.kind` of a Parquet run.
pub const OUTPUT_KIND: &str = "parquet";

/// Row groups are also cut at this many bytes.
const ROW_GROUP_BYTES: usize = 128 * 1024 * 1024;

/// A Parquet run's output, as recorded in `ferry.outputs` at plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParquetSpec {
    /// Where the datasets go: an absolute folder or `s3://bucket/prefix/`.
    pub location: String,
    /// The codec.
    pub compression: ParquetCompression,
    /// The most rows in a row group.
    pub row_group_rows: usize,
}

/// How a column is stored, in words (the file metadata and `_manifest.json` say it).
pub fn encoding_of(pg_type: PgType, ddb_type: Option<DdbType>) -> String {
    match pg_type {
        PgType::Text if ddb_type == Some(DdbType::N) => "string (exact decimal text)".into(),
        PgType::Text => "string".into(),
        PgType::Numeric => "string (exact decimal text)".into(),
        PgType::NumericScaled { precision, scale } => format!("decimal128({precision},{scale})"),
        PgType::Bytea => "binary".into(),
        PgType::Boolean => "boolean".into(),
        PgType::Jsonb => "string (canonical JSON)".into(),
        PgType::TextArray => "list<string>".into(),
        PgType::NumericArray => "list<string (exact decimal text)>".into(),
        PgType::ByteaArray => "list<binary>".into(),
        PgType::Int2 => "int16".into(),
        PgType::Int4 => "int32".into(),
        PgType::Int8 => "int64".into(),
        PgType::Float8 => "float64".into(),
        PgType::Timestamptz => "timestamp(us, UTC)".into(),
    }
}

/// The Arrow type a column is written as.
fn parquet_type(pg_type: PgType) -> DataType {
    match pg_type {
        PgType::NumericScaled { precision, scale } => DataType::Decimal128(precision, scale as i8),
        other => crate::convert::arrow_type(other),
    }
}

/// The Arrow schema of a table's files: its columns, the overflow (or rest) column, then
/// `_ferry_chunk`; the schema's metadata holds the column choices (`ferry.schema`). `table_mode`:
/// the columns are DynamoDB attributes of their `ddb_type` (not a routed run's typed columns).
pub fn parquet_schema(table: &TableSchema, table_mode: bool) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .columns
        .iter()
        .map(|c| Field::new(&c.name, parquet_type(c.pg_type), !c.is_key))
        .collect();
    fields.push(Field::new(&table.overflow_column, DataType::Utf8, true));
    fields.push(Field::new(PROVENANCE_COLUMN, DataType::Int64, false));
    let metadata = HashMap::from([(
        "ferry.schema".to_string(),
        schema_description(table, table_mode),
    )]);
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// The JSON recorded as `ferry.schema` in every file and in `_manifest.json`.
pub fn schema_description(table: &TableSchema, table_mode: bool) -> String {
    let typed = table_mode;
    let columns: Vec<serde_json::Value> = table
        .columns
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "dynamodb_type": typed.then(|| c.ddb_type.descriptor()),
                "sql_type": c.pg_type.sql(),
                "parquet": encoding_of(c.pg_type, typed.then_some(c.ddb_type)),
                "key": c.is_key,
            })
        })
        .collect();
    serde_json::json!({
        "table": table.table,
        "columns": columns,
        "overflow_column": { "name": table.overflow_column, "parquet": "string (canonical JSON object of the attributes no column holds)" },
        "nested_json": table.nested_json,
        "provenance_column": PROVENANCE_COLUMN,
    })
    .to_string()
}

/// Exact `i128` mantissa of decimal `text` at `scale`, or `None` when it does not fit
/// `decimal128(precision, scale)` exactly.
pub fn decimal_of(text: &str, precision: u8, scale: u8) -> Option<i128> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || (int.is_empty() && frac.is_empty())
    {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    let int = int.trim_start_matches('0');
    if frac.len() > usize::from(scale) || int.len() + usize::from(scale) > usize::from(precision) {
        return None;
    }
    let mut digits = String::with_capacity(int.len() + usize::from(scale));
    digits.push_str(int);
    digits.push_str(frac);
    digits.extend(std::iter::repeat_n('0', usize::from(scale) - frac.len()));
    let value: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some(if negative { -value } else { value })
}

/// A decoded (or routed) batch in its file's shape: decimal columns as decimal128, plus the
/// provenance column.
pub fn to_parquet_batch(
    table: &TableSchema,
    schema: &SchemaRef,
    batch: &RecordBatch,
    provenance: i64,
) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 1);
    for (i, column) in batch.columns().iter().enumerate() {
        let spec = table.columns.get(i);
        match spec.map(|c| c.pg_type) {
            Some(PgType::NumericScaled { precision, scale }) => {
                let text = column.as_string::<i32>();
                let mut builder = Decimal128Builder::with_capacity(text.len())
                    .with_precision_and_scale(precision, scale as i8)
                    .map_err(|e| WorkerError::Internal(e.to_string()))?;
                for value in text.iter() {
                    match value {
                        None => builder.append_null(),
                        Some(v) => builder.append_value(decimal_of(v, precision, scale).ok_or_else(|| {
                            WorkerError::Internal(format!(
                                "{v} passed its decimal({precision},{scale}) cast but does not fit it"
                            ))
                        })?),
                    }
                }
                arrays.push(Arc::new(builder.finish()));
            }
            _ => arrays.push(column.clone()),
        }
    }
    arrays.push(Arc::new(Int64Array::from(vec![
        provenance;
        batch.num_rows()
    ])));
    RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| WorkerError::Internal(format!("a Parquet batch does not fit its schema: {e}")))
}

/// The key of the file holding `table`'s rows of chunk `chunk` of load `load_id` of a shard.
pub fn object_key(table: &str, shard_id: &str, load_id: i64, chunk: u64) -> String {
    format!("{table}/part-{shard_id}-l{load_id:06}-c{chunk:06}.parquet")
}

/// The load and chunk of a data file's key (`None` for anything else).
pub fn parse_object_key(key: &str) -> Option<(i64, u64)> {
    let name = key.rsplit('/').next()?;
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (rest, chunk) = stem.rsplit_once("-c")?;
    let (_, load) = rest.rsplit_once("-l")?;
    Some((load.parse().ok()?, chunk.parse().ok()?))
}

fn split_provenance(provenance: i64) -> (i64, u64) {
    (
        provenance >> CHUNK_INDEX_BITS,
        (provenance & ((1 << CHUNK_INDEX_BITS) - 1)) as u64,
    )
}

/// A Parquet run's output, opened.
#[derive(Debug)]
pub struct ParquetOutput {
    /// The run.
    pub run_id: String,
    /// The settings recorded at plan.
    pub spec: ParquetSpec,
    /// Where files go.
    pub store: Box<dyn OutputStore>,
}

static AWS: OnceLock<AwsSettings> = OnceLock::new();
type OutputCache = Mutex<HashMap<String, Arc<ParquetOutput>>>;
static OUTPUTS: OnceLock<OutputCache> = OnceLock::new();

/// The `[aws]` settings S3 outputs are opened with (the binaries set them from their
/// configuration once at start; otherwise the environment's).
pub fn set_aws_settings(aws: AwsSettings) {
    let _ = AWS.set(aws);
}

fn aws_settings() -> AwsSettings {
    AWS.get().cloned().unwrap_or_else(|| {
        ferry_shared::config::load_settings(None)
            .map(|s| s.aws)
            .unwrap_or_default()
    })
}

/// Records a run's Parquet output in the ledger (plan; the first plan of a run wins).
pub async fn record_output(client: &Client, run_id: &str, spec: &ParquetSpec) -> Result<()> {
    let spec_json =
        serde_json::to_string(spec).map_err(|e| WorkerError::Internal(e.to_string()))?;
    let output = OutputRecord {
        kind: OUTPUT_KIND.into(),
        location: spec.location.clone(),
        spec_json,
    };
    Ok(outputs::record_output(client, run_id, &output).await?)
}

/// The run's Parquet settings as recorded, if it is a Parquet run.
pub async fn recorded_spec(client: &Client, run_id: &str) -> Result<Option<ParquetSpec>> {
    let Some(OutputRecord {
        kind, spec_json, ..
    }) = outputs::recorded_output(client, run_id).await?
    else {
        return Ok(None);
    };
    if kind != OUTPUT_KIND {
        return Err(WorkerError::ledger(format!(
            "run {run_id} writes a {kind:?} output, which this Ferry does not know"
        )));
    }
    serde_json::from_str(&spec_json).map(Some).map_err(|e| {
        WorkerError::ledger(format!("run {run_id}'s Parquet settings do not parse: {e}"))
    })
}

/// Opens (once per process) the output of a Parquet run.
pub async fn output_of(client: &Client, run_id: &str) -> Result<Arc<ParquetOutput>> {
    let cache = OUTPUTS.get_or_init(Default::default);
    if let Some(output) = cache.lock().expect("output cache").get(run_id) {
        return Ok(output.clone());
    }
    let spec = recorded_spec(client, run_id).await?.ok_or_else(|| {
        WorkerError::ledger(format!(
            "run {run_id} loads Parquet but has no output recorded"
        ))
    })?;
    let store = ferry_shared::output::open_output(&spec.location, &aws_settings()).await?;
    let output = Arc::new(ParquetOutput {
        run_id: run_id.to_string(),
        spec,
        store,
    });
    cache
        .lock()
        .expect("output cache")
        .insert(run_id.to_string(), output.clone());
    Ok(output)
}

/// The writer settings of a table's files.
fn writer_properties(
    spec: &ParquetSpec,
    table: &TableSchema,
    table_mode: bool,
) -> Result<WriterProperties> {
    let compression = match spec.compression {
        ParquetCompression::Zstd => Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(|e| WorkerError::Internal(e.to_string()))?,
        ),
        ParquetCompression::Snappy => Compression::SNAPPY,
    };
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(spec.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("ferry {} (parquet-rs)", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "ferry.schema".to_string(),
            schema_description(table, table_mode),
        )]))
        .build())
}

/// Rows in a Parquet file's bytes (from its footer).
pub fn parquet_rows(bytes: Vec<u8>) -> Result<u64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))
        .map_err(|e| WorkerError::Internal(format!("cannot read a Parquet footer: {e}")))?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

/// The table being written.
struct OpenFile {
    table: usize,
    /// In a mutex only to be `Sync` (the sink is used by one task at a time).
    writer: Mutex<Option<ArrowWriter<Vec<u8>>>>,
    rows: u64,
    provenance: Option<i64>,
}

/// Writes a shard's chunks as Parquet files; the checkpoint goes to the ledger.
pub struct ParquetSink<'c> {
    ledger: &'c dyn Ledger,
    output: Arc<ParquetOutput>,
    shard_id: String,
    tables: Arc<Vec<TableSchema>>,
    schemas: Vec<SchemaRef>,
    properties: Vec<WriterProperties>,
    open: Option<OpenFile>,
    /// Files of the current chunk (table, file), recorded with its checkpoint.
    chunk_files: Vec<(usize, FileRecord)>,
}

impl<'c> ParquetSink<'c> {
    /// A sink for `shard_id` of a run writing `tables` into `output` (`table_mode`: not routed).
    pub fn new(
        ledger: &'c dyn Ledger,
        output: Arc<ParquetOutput>,
        shard_id: &str,
        tables: Arc<Vec<TableSchema>>,
        table_mode: bool,
    ) -> Result<ParquetSink<'c>> {
        let properties = tables
            .iter()
            .map(|t| writer_properties(&output.spec, t, table_mode))
            .collect::<Result<_>>()?;
        Ok(ParquetSink {
            ledger,
            schemas: tables
                .iter()
                .map(|t| parquet_schema(t, table_mode))
                .collect(),
            output,
            shard_id: shard_id.to_string(),
            tables,
            properties,
            open: None,
            chunk_files: Vec::new(),
        })
    }

    fn key(&self, table: usize, load_id: i64, chunk: u64) -> String {
        object_key(&self.tables[table].table, &self.shard_id, load_id, chunk)
    }

    async fn record(&self, table: usize, file: &FileRecord) -> Result<()> {
        Ok(self
            .ledger
            .record_file(&self.output.run_id, &self.tables[table].table, file)
            .await?)
    }
}

/// Runs CPU-heavy Parquet encoding off the async threads, handing the writer back.
async fn off_thread<T: Send + 'static>(
    writer: ArrowWriter<Vec<u8>>,
    work: impl FnOnce(&mut ArrowWriter<Vec<u8>>) -> parquet::errors::Result<T> + Send + 'static,
) -> Result<(ArrowWriter<Vec<u8>>, T)> {
    tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        let result = work(&mut writer);
        result.map(|value| (writer, value))
    })
    .await
    .map_err(|e| WorkerError::Internal(format!("Parquet encoding task: {e}")))?
    .map_err(|e| WorkerError::Internal(format!("Parquet encoding failed: {e}")))
}

#[async_trait]
impl Sink for ParquetSink<'_> {
    fn describe(&self) -> String {
        format!(
            "Parquet files ({:?}) in {}, ledger in the database",
            self.output.spec.compression, self.output.spec.location
        )
    }

    fn rows_commit_with_checkpoint(&self) -> bool {
        false
    }

    async fn begin_chunk(&mut self) -> Result<()> {
        self.open = None;
        self.chunk_files.clear();
        Ok(())
    }

    async fn probe(&self, table: usize, _key: &[KeyValue], provenance: i64) -> Result<Presence> {
        // The chunk's file for this table exists or not; its name says it is this load's chunk.
        let (load_id, chunk) = split_provenance(provenance);
        let key = self.key(table, load_id, chunk);
        let Some(bytes) = self.output.store.size(&key).await? else {
            return Ok(Presence::Absent);
        };
        // Make sure the ledger knows the file (the crash may have come before it was recorded).
        let body = self.output.store.get(&key).await?.ok_or_else(|| {
            WorkerError::Internal(format!("{} vanished", self.output.store.location(&key)))
        })?;
        let rows = tokio::task::spawn_blocking(move || parquet_rows(body))
            .await
            .map_err(|e| WorkerError::Internal(e.to_string()))??;
        self.record(
            table,
            &FileRecord {
                load_id,
                chunk,
                key,
                rows,
                bytes,
            },
        )
        .await?;
        Ok(Presence::Ours)
    }

    async fn begin_table(&mut self, table: usize) -> Result<()> {
        let writer = ArrowWriter::try_new(
            Vec::new(),
            self.schemas[table].clone(),
            Some(self.properties[table].clone()),
        )
        .map_err(|e| WorkerError::Internal(format!("cannot start a Parquet file: {e}")))?;
        self.open = Some(OpenFile {
            table,
            writer: Mutex::new(Some(writer)),
            rows: 0,
            provenance: None,
        });
        Ok(())
    }

    async fn send(&mut self, rows: TableRows) -> Result<()> {
        let Payload::Batch(batch) = rows.payload else {
            return Err(WorkerError::Internal(
                "rows encoded for another load path".into(),
            ));
        };
        let open = self.open.as_mut().expect("a table is open");
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let provenance = batch
            .column(batch.num_columns() - 1)
            .as_primitive::<arrow_array::types::Int64Type>()
            .value(0);
        open.provenance.get_or_insert(provenance);
        open.rows += batch.num_rows() as u64;
        let slot = open.writer.get_mut().expect("writer lock");
        let writer = slot.take().expect("the writer is back");
        let (writer, ()) = off_thread(writer, move |w| w.write(&batch)).await?;
        *slot = Some(writer);
        Ok(())
    }

    async fn end_table(&mut self) -> Result<TableEnd> {
        let open = self.open.take().expect("a table is open");
        let writer = open.writer.into_inner().expect("writer lock");
        let (Some(provenance), Some(writer)) = (open.provenance, writer) else {
            return Ok(TableEnd::Written(0));
        };
        let (mut writer, _) = off_thread(writer, |w| w.finish()).await?;
        let bytes = std::mem::take(writer.inner_mut());
        let (load_id, chunk) = split_provenance(provenance);
        let key = self.key(open.table, load_id, chunk);
        let size = bytes.len() as u64;
        match self.output.store.put_new(&key, bytes).await? {
            PutOutcome::Created => {
                self.chunk_files.push((
                    open.table,
                    FileRecord {
                        load_id,
                        chunk,
                        key,
                        rows: open.rows,
                        bytes: size,
                    },
                ));
                Ok(TableEnd::Written(open.rows))
            }
            PutOutcome::Exists => Ok(TableEnd::Conflict(format!(
                "{} exists: another worker published this chunk",
                self.output.store.location(&key)
            ))),
        }
    }

    async fn abort(&mut self) -> Result<()> {
        self.open = None;
        self.chunk_files.clear();
        Ok(())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        for (table, file) in std::mem::take(&mut self.chunk_files) {
            self.record(table, &file).await?;
        }
        super::sql::write_checkpoint(self.ledger, checkpoint).await
    }
}

/// What a Parquet run's ended load leaves: its files, deleted, and their records in the ledger
/// (the [`Unload`] of a Parquet dataset; the rest of the protocol is the ledger's own).
pub struct ParquetFiles<'c, L: Ledger + ?Sized = Client> {
    client: &'c L,
    output: Arc<ParquetOutput>,
}

impl<'c, L: Ledger + ?Sized> ParquetFiles<'c, L> {
    /// The files of the run writing `output`, recorded in the ledger `client`.
    pub fn new(client: &'c L, output: Arc<ParquetOutput>) -> ParquetFiles<'c, L> {
        ParquetFiles { client, output }
    }
}

#[async_trait]
impl<L: Ledger + ?Sized> Unload for ParquetFiles<'_, L> {
    async fn remove_rows(&self, table: &TableSchema, load_id: i64) -> Result<u64> {
        let prefix = format!("{}/", table.table);
        let mut removed = 0;
        for object in self.output.store.list(&prefix).await? {
            if parse_object_key(&object.key).is_some_and(|(load, _)| load == load_id) {
                self.output.store.delete(&object.key).await?;
                removed += 1;
            }
        }
        self.client.forget_files(load_id).await?;
        tracing::info!(table = %table.table, load_id, files = removed, "removed a load's parquet files");
        Ok(removed)
    }
}

/// A recorded file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DatasetFile {
    /// The file's key under the output location.
    pub key: String,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Per table, the recorded files of the run's current loads (each shard's current generation):
/// what the dataset holds once stale files are gone.
pub async fn current_files(
    client: &Client,
    run_id: &str,
) -> Result<BTreeMap<String, Vec<DatasetFile>>> {
    let current = outputs::current_loads(client, run_id).await?;
    let mut files: BTreeMap<String, Vec<DatasetFile>> = BTreeMap::new();
    for (table, file) in outputs::output_files(client, run_id).await? {
        if !current.contains(&file.load_id) {
            continue;
        }
        files.entry(table).or_default().push(DatasetFile {
            key: file.key,
            rows: file.rows,
            bytes: file.bytes,
        });
    }
    for list in files.values_mut() {
        list.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Ok(files)
}

/// What [`seal`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sealed {
    /// Per table: files and rows listed in its `_manifest.json` (every run's that shares it).
    pub tables: Vec<(String, usize, u64, u64)>,
    /// Files deleted because their load is this run's and not current (or leftover temporary
    /// files).
    pub removed: Vec<String>,
    /// Files kept that no run of this ledger wrote (another ledger's run in the same location).
    pub foreign: Vec<String>,
}

/// Ends a Parquet run's dataset (finalize): deletes every data file of *this run* whose load is
/// not its shard's current one and leftover temporary files, then writes each table's
/// `_manifest.json` listing the committed files of every run that shares the location (appends),
/// so a run's finalize never removes or unlists another run's files. `complete` says whether this
/// run verified; the manifest's `complete` holds when every run listed is complete.
pub async fn seal(
    client: &Client,
    run: &RunRecord,
    tables: &[TableSchema],
    complete: bool,
) -> Result<Sealed> {
    let table_mode = run.schema.routing.is_none();
    let output = output_of(client, &run.run_id).await?;
    let sharing = outputs::runs_at(client, &output.spec.location).await?;
    // Which run each load of this ledger belongs to, and which loads are current.
    let mut owner: HashMap<i64, String> = HashMap::new();
    let mut current: HashSet<i64> = HashSet::new();
    let mut files: BTreeMap<String, Vec<DatasetFile>> = BTreeMap::new();
    let mut runs = Vec::new();
    let mut all_complete = complete;
    for (run_id, state) in &sharing {
        for load in outputs::run_loads(client, run_id).await? {
            owner.insert(load, run_id.clone());
        }
        current.extend(outputs::current_loads(client, run_id).await?);
        let mut run_files = 0;
        for (table, list) in current_files(client, run_id).await? {
            run_files += list.len();
            files.entry(table).or_default().extend(list);
        }
        if *run_id != run.run_id {
            all_complete &= state == ferry_ledger::run_state::COMPLETE;
        }
        runs.push(serde_json::json!({
            "run": run_id,
            "state": if *run_id == run.run_id { if complete { "complete" } else { "failed" } } else { state.as_str() },
            "files": run_files,
        }));
    }
    for list in files.values_mut() {
        list.sort_by(|a, b| a.key.cmp(&b.key));
    }
    let mut sealed = Sealed::default();
    for table in tables {
        let prefix = format!("{}/", table.table);
        let listed = files.get(&table.table).cloned().unwrap_or_default();
        let committed: HashSet<&str> = listed.iter().map(|f| f.key.as_str()).collect();
        for object in output.store.list(&prefix).await? {
            if committed.contains(object.key.as_str()) {
                continue;
            }
            let name = object.key.rsplit('/').next().unwrap_or_default();
            let stale = match parse_object_key(&object.key) {
                Some((load, _)) => match owner.get(&load) {
                    // This run's load that is no longer its shard's current one.
                    Some(owner) if *owner == run.run_id => !current.contains(&load),
                    // Another run's file: that run's own reset and finalize decide.
                    Some(_) => false,
                    None => {
                        sealed.foreign.push(output.store.location(&object.key));
                        false
                    }
                },
                None => name.starts_with(".tmp-"),
            };
            if stale {
                output.store.delete(&object.key).await?;
                sealed.removed.push(output.store.location(&object.key));
            }
        }
        let rows: u64 = listed.iter().map(|f| f.rows).sum();
        let bytes: u64 = listed.iter().map(|f| f.bytes).sum();
        let manifest = serde_json::json!({
            "ferry_run": run.run_id,
            "runs": runs,
            "table": table.table,
            "complete": all_complete,
            "location": output.store.location(&prefix),
            "compression": output.spec.compression,
            "row_group_rows": output.spec.row_group_rows,
            "rows": rows,
            "bytes": bytes,
            "schema": serde_json::from_str::<serde_json::Value>(&schema_description(table, table_mode)).unwrap_or_default(),
            "files": listed,
        });
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| WorkerError::Internal(e.to_string()))?;
        output
            .store
            .put(&format!("{prefix}_manifest.json"), text)
            .await?;
        sealed
            .tables
            .push((table.table.clone(), listed.len(), rows, bytes));
    }
    for removed in &sealed.removed {
        tracing::warn!(file = %removed, "removed a parquet file of a load that is not current");
    }
    for foreign in &sealed.foreign {
        tracing::warn!(file = %foreign, "kept a parquet file no run of this ledger wrote; it is not in _manifest.json");
    }
    Ok(sealed)
}

#[cfg(test)]
#[path = "parquet_fake_tests.rs"]
mod fake_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_or_refused() {
        assert_eq!(decimal_of("12.5", 38, 2), Some(1250));
        assert_eq!(decimal_of("-0.01", 38, 2), Some(-1));
        assert_eq!(
            decimal_of("12.50", 38, 1),
            Some(125),
            "trailing zeros are not digits"
        );
        assert_eq!(decimal_of("12.505", 38, 2), None);
        assert_eq!(decimal_of("0", 38, 0), Some(0));
        let digits38 = "12345678901234567890123456789012345678";
        assert_eq!(decimal_of(digits38, 38, 0), Some(digits38.parse().unwrap()));
        assert_eq!(decimal_of(digits38, 38, 1), None);
        assert_eq!(decimal_of("1e5", 38, 0), None);
    }

    #[test]
    fn object_keys_name_the_load_and_chunk() {
        let key = object_key("Orders", "abc-def", 12, 3);
        assert_eq!(key, "Orders/part-abc-def-l000012-c000003.parquet");
        assert_eq!(parse_object_key(&key), Some((12, 3)));
        assert_eq!(parse_object_key("Orders/_manifest.json"), None);
        assert_eq!(
            split_provenance(ferry_shared::schema::provenance(7, 9).unwrap()),
            (7, 9)
        );
    }
}

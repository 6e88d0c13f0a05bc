//! `ferry-coordinator probe`: measures, on this machine and against one target, the constants
//! `plan --dry-run` estimates a run from ([`crate::estimate`]), and records them in the target's
//! ledger (`ferry.probes`, with the time, the host and its cores):
//! - the decode rate: items per second one core decodes and encodes into the target's COPY
//!   format, through the worker's own path ([`BlockEncoder`]), on synthetic DynamoDB JSON lines
//!   or, with `--export`, on the first lines of the export's first data file (the user's items);
//! - the target's ingest ceiling: synthetic rows as wide as the export's items (or
//!   `probe.line_bytes`) copied into a scratch table through 1, 2, 4, … parallel connections (up
//!   to `probe.max_connections`) the way a run loads that target: binary COPY in a transaction on
//!   PostgreSQL, CSV COPY in autocommit over the simple protocol on HeliosDB (which runs COPY
//!   slowly inside a transaction); rows and bytes per second at each level. The scratch table has
//!   a unique name, is created before each level and dropped after it, error or not;
//! - the source read rate (`--export`): stored bytes per second reading the export's data files
//!   (their first `probe.read_bytes`), one stream, as a worker reads a shard.
//!
//! Identifiers are quoted; every value of the probe's row is a bound parameter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_ledger::runs as ledger;
use ferry_ledger::sql;
use ferry_shared::config::{KeyAttribute, Settings};
use ferry_shared::ident::quote_ident;
use ferry_shared::manifest::ExportListing;
use ferry_shared::schema::{DdbType, TableSchema};
use ferry_shared::store::ObjectStore;
use ferry_worker::copy::{COPY_HEADER, COPY_TRAILER};
use ferry_worker::decode::{Decoder, RawBlock};
use ferry_worker::simple::{CopyResult, SimpleCopyClient};
use ferry_worker::sink::encode::BlockEncoder;
use ferry_worker::sink::Payload;
use ferry_worker::target::{LoadPath, Target};
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

use crate::infer::{infer_schema, SampleStats};
use crate::{CoordinatorError, Result};

/// Rounds of the decode measurement; the best one counts (the machine may be shared).
const DECODE_ROUNDS: usize = 3;

/// What to probe.
#[derive(Clone, Debug)]
pub struct ProbeRequest {
    /// The target database.
    pub target_url: String,
    /// An export whose items, width and data files to measure with (a folder or `s3://…`).
    pub export: Option<String>,
    /// Key attributes of the export's items (default: `mapping.key`, else an attribute every
    /// sampled item has stands in: decoding costs the same whichever attribute is the key).
    pub keys: Vec<KeyAttribute>,
    /// Settings (`[probe]` says how much to measure).
    pub settings: Settings,
}

/// One level of the ceiling measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Parallel COPY connections.
    pub connections: usize,
    /// Rows committed.
    pub rows: u64,
    /// COPY bytes sent (the target's wire format).
    pub bytes: u64,
    /// Wall time from the first COPY to the last commit.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_sec: f64,
    /// Bytes per second.
    pub bytes_per_sec: f64,
}

/// The source read measurement.
#[derive(Clone, Debug, Serialize)]
pub struct SourceRead {
    /// The export read.
    pub location: String,
    /// Stored bytes read.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Stored bytes per second.
    pub bytes_per_sec: f64,
}

/// What a probe measured (and recorded).
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// Its id in `ferry.probes`.
    pub probe_id: String,
    /// This machine's host name.
    pub host: String,
    /// Cores available to this process.
    pub cores: usize,
    /// The target's `server_version`.
    pub server: String,
    /// How the target is loaded (`binary` or `csv`).
    pub load_path: String,
    /// The lines the decode rate was measured on.
    pub items_source: String,
    /// How many.
    pub decode_lines: usize,
    /// Items per second one core takes from gzip to COPY bytes for the target (gunzip, MD5, line
    /// framing, decoding, encoding): a worker's CPU per item.
    pub decode_items_per_sec: f64,
    /// Items per second one core gunzips, hashes and frames.
    pub read_items_per_sec: f64,
    /// Items per second one core decodes (Arrow batches, no encoding).
    pub decode_only_items_per_sec: f64,
    /// JSON bytes per line of the items measured.
    pub line_bytes: f64,
    /// COPY bytes per synthetic row sent to the target.
    pub row_bytes: f64,
    /// Each level of the ceiling measurement.
    pub levels: Vec<Level>,
    /// The best rows per second of any level.
    pub ceiling_rows_per_sec: f64,
    /// Bytes per second at that level.
    pub ceiling_bytes_per_sec: f64,
    /// Connections at that level.
    pub ceiling_connections: usize,
    /// Whether more connections stopped helping (else the ceiling is a lower bound).
    pub saturated: bool,
    /// The source read rate, with `--export`.
    pub source: Option<SourceRead>,
}

/// Whether the ceiling stopped rising: the best level is not the last, or the last doubling gained
/// under 10%.
pub fn saturated(levels: &[Level]) -> bool {
    let Some((best, _)) = levels
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.rows_per_sec.total_cmp(&b.1.rows_per_sec))
    else {
        return false;
    };
    match levels {
        [.., before, last] => {
            best + 1 < levels.len() || last.rows_per_sec < before.rows_per_sec * 1.1
        }
        _ => false,
    }
}

/// The connection counts measured: 1, 2, 4, … up to `max`, and `max` itself.
pub fn connection_levels(max: usize) -> Vec<usize> {
    let max = max.max(1);
    let mut levels: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|n| *n <= max)
        .collect();
    if levels.last() != Some(&max) {
        levels.push(max);
    }
    levels
}

/// A synthetic DynamoDB JSON export line about `width` bytes long (never shorter than its
/// attributes need): key `PK` = `<tag>-<n>` (unique per tag), `SK`, a few typed attributes, a
/// nested map, a string set, and a padding string.
pub fn synthetic_line(tag: &str, n: u64, width: usize) -> String {
    let mut line = format!(
        concat!(
            r#"{{"Item":{{"PK":{{"S":"{tag}-{n:010}"}},"SK":{{"S":"item#{sk:04}"}},"#,
            r#""status":{{"S":"{status}"}},"amount":{{"N":"{units}.{cents:02}"}},"#,
            r#""count":{{"N":"{count}"}},"active":{{"BOOL":{active}}},"#,
            r#""tags":{{"SS":["t{t1}","t{t2}"]}},"#,
            r#""meta":{{"M":{{"source":{{"S":"probe"}},"rank":{{"N":"{rank}"}}}}}},"note":{{"S":""#
        ),
        tag = tag,
        n = n,
        sk = n % 7919,
        status = ["active", "pending", "closed"][(n % 3) as usize],
        units = n.wrapping_mul(7919) % 1_000_000,
        cents = n % 100,
        count = n % 1000,
        active = n % 2 == 0,
        t1 = n % 17,
        t2 = 17 + n % 13,
        rank = n % 101,
    );
    const END: &str = r#""}}}"#;
    let pad = width.saturating_sub(line.len() + END.len());
    line.extend((0..pad).map(|i| (b'a' + ((n as usize + i) % 26) as u8) as char));
    line.push_str(END);
    line
}

fn invalid(message: impl Into<String>) -> CoordinatorError {
    CoordinatorError::Invalid(message.into())
}

pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "unknown".into(),
    }
}

/// Cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `probe-<UTC time>-<pid>`: unique on the machine, readable in the ledger.
fn new_probe_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let time = chrono::DateTime::from_timestamp(now.as_secs() as i64, now.subsec_nanos())
        .map(|t| t.format("%Y%m%dt%H%M%S%3fz").to_string())
        .unwrap_or_else(|| now.as_millis().to_string());
    format!("probe-{time}-{}", std::process::id())
}

/// Measures and records; see the module's notes.
pub async fn probe(request: &ProbeRequest) -> Result<ProbeReport> {
    let settings = &request.settings;
    let client = ferry_worker::conn::control(&request.target_url).await?;
    let target = Target::detect(&client, settings.load.copy_format).await?;
    let path = match target.load_path {
        LoadPath::BinaryCopyInTransaction | LoadPath::CsvCopyAutocommit => target.load_path,
        other => {
            return Err(invalid(format!(
                "the probe measures COPY, and load.copy_format makes this target load with {}: \
                 use auto, binary or csv",
                other.as_str()
            )))
        }
    };
    // A ledger from a newer Ferry, or a probe table this Ferry cannot write, is refused before
    // anything is measured (preparing the insert checks its columns).
    ledger::ensure_ledger(&client).await?;
    client
        .batch_execute(sql::CREATE_PROBES)
        .await
        .map_err(CoordinatorError::db("cannot create ferry.probes"))?;
    let insert = client
        .prepare(sql::INSERT_PROBE)
        .await
        .map_err(CoordinatorError::db("cannot record probes in ferry.probes"))?;
    let probe_id = new_probe_id();
    let scratch = probe_id
        .replace('-', "_")
        .replacen("probe", "ferry_probe", 1);
    tracing::info!(probe = %probe_id, server = %target.server_version, load_path = path.as_str(), "probing");

    // The export first: its data files are read before anything else warms a cache.
    let mut source = None;
    let mut export_lines = None;
    if let Some(export) = &request.export {
        let (opened, listing) = crate::plan::open_listing(export, settings).await?;
        source = Some(
            measure_source(
                opened.store.as_ref(),
                &listing,
                settings.probe.read_bytes.get(),
            )
            .await?,
        );
        export_lines = Some(first_lines(opened.store.clone(), &listing, settings).await?);
    }

    // The decode rate: the export's first lines with their own schema, or synthetic ones.
    let (items_source, lines, schema) = match export_lines {
        Some((location, lines)) => {
            let keys = decode_keys(request, &lines)?;
            let schema = schema_of(&scratch, &keys, &lines, settings, &target)?;
            (format!("first lines of {location}"), lines, schema)
        }
        None => {
            let width = settings.probe.line_bytes;
            let lines: Vec<Vec<u8>> = (0..settings.probe.decode_items.get() as u64)
                .map(|n| synthetic_line("d", n, width).into_bytes())
                .collect();
            let schema = synthetic_schema(&scratch, width, settings, &target)?;
            ("synthetic lines".to_string(), lines, schema)
        }
    };
    let line_bytes = lines.iter().map(|l| l.len() as f64).sum::<f64>() / lines.len().max(1) as f64;
    let decode_lines = lines.len();
    let measured = settings.clone();
    let rates = tokio::task::spawn_blocking(move || decode_rates(&schema, &lines, &measured, path))
        .await
        .map_err(|e| invalid(format!("the decode measurement died: {e}")))??;
    tracing::info!(
        items_per_sec = rates.worker.round(),
        read = rates.read.round(),
        decode = rates.decode.round(),
        lines = decode_lines,
        "decode rate measured"
    );

    // The ceiling: synthetic rows as wide as the items measured, through 1, 2, 4, … connections.
    let width = line_bytes.round() as usize;
    let schema = synthetic_schema(&scratch, width, settings, &target)?;
    let mut levels = Vec::new();
    for connections in connection_levels(settings.probe.max_connections.get()) {
        let level = measure_level(
            &client,
            &request.target_url,
            &schema,
            path,
            connections,
            width,
            settings,
        )
        .await?;
        tracing::info!(
            connections,
            rows = level.rows,
            rows_per_sec = level.rows_per_sec.round(),
            "ceiling level measured"
        );
        levels.push(level);
    }
    let best = levels
        .iter()
        .max_by(|a, b| a.rows_per_sec.total_cmp(&b.rows_per_sec))
        .cloned()
        .ok_or_else(|| invalid("no level measured"))?;
    let total_rows: u64 = levels.iter().map(|l| l.rows).sum();
    let total_bytes: u64 = levels.iter().map(|l| l.bytes).sum();
    let report = ProbeReport {
        probe_id,
        host: host_name(),
        cores: cores(),
        server: target.server_version.clone(),
        load_path: path.as_str().to_string(),
        items_source,
        decode_lines,
        decode_items_per_sec: rates.worker,
        read_items_per_sec: rates.read,
        decode_only_items_per_sec: rates.decode,
        line_bytes,
        row_bytes: total_bytes as f64 / total_rows.max(1) as f64,
        saturated: saturated(&levels),
        ceiling_rows_per_sec: best.rows_per_sec,
        ceiling_bytes_per_sec: best.bytes_per_sec,
        ceiling_connections: best.connections,
        levels,
        source,
    };
    record(&client, &insert, &report).await?;
    tracing::info!(probe = %report.probe_id, "probe recorded in ferry.probes");
    Ok(report)
}

/// Reads the export's data files in order, up to `limit` stored bytes, one stream at a time.
async fn measure_source(
    store: &dyn ObjectStore,
    listing: &ExportListing,
    limit: u64,
) -> Result<SourceRead> {
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    let started = Instant::now();
    'files: for file in listing.files.iter().filter(|f| f.size > 0) {
        let location = store.location(&file.key);
        let mut stream = store.open(&file.key).await?;
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| invalid(format!("cannot read {location}: {e}")))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            if bytes >= limit {
                break 'files;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if bytes == 0 {
        return Err(invalid(format!("{} has no data to read", listing.location)));
    }
    Ok(SourceRead {
        location: listing.location.clone(),
        bytes,
        seconds,
        bytes_per_sec: bytes as f64 / seconds.max(1e-9),
    })
}

/// The first `probe.decode_items` lines of the export's first data file with items, and its
/// location.
async fn first_lines(
    store: Arc<dyn ObjectStore>,
    listing: &ExportListing,
    settings: &Settings,
) -> Result<(String, Vec<Vec<u8>>)> {
    let file = listing
        .files
        .iter()
        .find(|f| f.size > 0 && f.item_count != Some(0))
        .ok_or_else(|| invalid(format!("{} has no items to decode", listing.location)))?;
    let location = store.location(&file.key);
    let stream = store.open(&file.key).await?;
    let raw = ferry_worker::source::blocking_reader(stream);
    let max = settings.probe.decode_items.get();
    let at = location.clone();
    let lines = tokio::task::spawn_blocking(move || {
        ferry_worker::source::sample_lines(raw, &at, max, ferry_worker::source::MAX_SAMPLE_BYTES)
    })
    .await
    .map_err(|e| invalid(format!("reading the export's first lines died: {e}")))??;
    if lines.is_empty() {
        return Err(invalid(format!("{location} has no lines to decode")));
    }
    Ok((location, lines))
}

/// The key attributes to decode the export's lines with: as given, as configured, else the first
/// attribute (by name) every sampled item holds with one key type.
fn decode_keys(request: &ProbeRequest, lines: &[Vec<u8>]) -> Result<Vec<KeyAttribute>> {
    if !request.keys.is_empty() {
        return Ok(request.keys.clone());
    }
    if !request.settings.mapping.key.is_empty() {
        return Ok(request.settings.mapping.key.clone());
    }
    let mut stats = SampleStats::default();
    for line in lines {
        stats.add_line(line);
    }
    let mut names: Vec<&String> = stats.attributes.keys().collect();
    names.sort();
    let stand_in = names.into_iter().find(|name| {
        let attribute = &stats.attributes[*name];
        let types: Vec<&DdbType> = attribute.types.keys().collect();
        attribute.present == stats.items && matches!(types.as_slice(), [t] if t.is_key_type())
    });
    match stand_in {
        Some(name) => {
            tracing::info!(key = %name, "no key given: an attribute every sampled item has stands in");
            Ok(vec![KeyAttribute::parse(name)?])
        }
        None => Err(invalid(
            "no attribute of the export's first items can stand in as the key: give --key",
        )),
    }
}

/// The schema `plan` would infer for `lines`, naming the scratch table.
fn schema_of(
    table: &str,
    keys: &[KeyAttribute],
    lines: &[Vec<u8>],
    settings: &Settings,
    target: &Target,
) -> Result<TableSchema> {
    let mut stats = SampleStats::default();
    for line in lines.iter().take(settings.mapping.sample_items) {
        stats.add_line(line);
    }
    infer_schema(
        table,
        keys,
        &settings.mapping,
        &stats,
        target.numeric_limit(),
        target.column_names(),
    )
}

/// The scratch table's schema: what `plan` infers for synthetic lines of `width` bytes.
fn synthetic_schema(
    table: &str,
    width: usize,
    settings: &Settings,
    target: &Target,
) -> Result<TableSchema> {
    let lines: Vec<Vec<u8>> = (0..200)
        .map(|n| synthetic_line("s", n, width).into_bytes())
        .collect();
    let keys = KeyAttribute::parse_list("PK:S,SK:S")?;
    schema_of(table, &keys, &lines, settings, target)
}

/// What one core does per item, in items per second.
#[derive(Clone, Copy, Debug, PartialEq)]
struct DecodeRates {
    /// The whole path: gunzip, MD5, line framing, decoding, COPY encoding.
    worker: f64,
    /// Gunzip, MD5 and line framing.
    read: f64,
    /// Decoding into Arrow batches.
    decode: f64,
}

/// Items per second one core takes `lines`, gzip-compressed, through the worker's path to COPY
/// bytes for `path` (the worker's reader [`ferry_worker::source::read_source`] and
/// [`BlockEncoder`]), and through its
/// reading and decoding stages alone; best of [`DECODE_ROUNDS`] rounds each.
fn decode_rates(
    schema: &TableSchema,
    lines: &[Vec<u8>],
    settings: &Settings,
    path: LoadPath,
) -> Result<DecodeRates> {
    use std::io::Write as _;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for line in lines {
        gzip.write_all(line)
            .and_then(|_| gzip.write_all(b"\n"))
            .map_err(|e| invalid(format!("cannot compress the probe's lines: {e}")))?;
    }
    let gzip = gzip
        .finish()
        .map_err(|e| invalid(format!("cannot compress the probe's lines: {e}")))?;
    let spec = ferry_worker::source::SourceSpec {
        location: "probe lines".into(),
        skip_lines: 0,
        chunk_lines: settings.load.chunk_lines.get(),
        block_lines: settings.load.block_lines.get(),
        block_bytes: 8 * 1024 * 1024,
    };
    let blocks: Vec<RawBlock> = lines
        .chunks(settings.load.block_lines.get())
        .map(RawBlock::of_lines)
        .collect();
    let decoder = Decoder::new(Arc::new(schema.clone()));
    let encoder = BlockEncoder::new(schema, None, path)?;
    let mut best = [f64::INFINITY; 3];
    let mut rows = 0u64;
    for _ in 0..DECODE_ROUNDS {
        let started = Instant::now();
        rows = 0;
        ferry_worker::source::read_source(&gzip[..], &spec, None, |framed| {
            let encoded = encoder.encode(&framed.block, 0)?;
            rows += encoded.rows;
            std::hint::black_box(&encoded.tables);
            Ok(())
        })?;
        best[0] = best[0].min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        ferry_worker::source::read_source(&gzip[..], &spec, None, |framed| {
            std::hint::black_box(&framed.block);
            Ok(())
        })?;
        best[1] = best[1].min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        for block in &blocks {
            std::hint::black_box(decoder.decode(block));
        }
        best[2] = best[2].min(started.elapsed().as_secs_f64());
    }
    if rows == 0 {
        return Err(invalid(
            "none of the lines measured decode into rows (every one is a reject)",
        ));
    }
    let rate = |seconds: f64| lines.len() as f64 / seconds.max(1e-9);
    Ok(DecodeRates {
        worker: rate(best[0]),
        read: rate(best[1]),
        decode: rate(best[2]),
    })
}

/// One connection's COPYs of a level: per COPY, its bytes and rows.
type Copies = Vec<(Vec<u8>, u64)>;

/// Encodes `rows` synthetic rows for connection `index` into COPYs of at most `per_copy` rows.
fn encode_copies(
    encoder: &BlockEncoder,
    index: usize,
    rows: u64,
    per_copy: u64,
    width: usize,
    block_lines: usize,
) -> Result<Copies> {
    let tag = format!("c{index}");
    let mut copies = Vec::new();
    let mut next = 0u64;
    while next < rows {
        let end = (next + per_copy).min(rows);
        let mut data = Vec::new();
        let mut copied = 0u64;
        let mut n = next;
        while n < end {
            let stop = (n + block_lines as u64).min(end);
            let lines: Vec<Vec<u8>> = (n..stop)
                .map(|i| synthetic_line(&tag, i, width).into_bytes())
                .collect();
            let encoded = encoder.encode(&RawBlock::of_lines(&lines), 0)?;
            for table in encoded.tables {
                if let Payload::Copy(bytes) = table.payload {
                    data.extend_from_slice(&bytes);
                    copied += table.rows;
                }
            }
            n = stop;
        }
        copies.push((data, copied));
        next = end;
    }
    Ok(copies)
}

/// Creates the scratch table, copies a level's rows into it through `connections` connections,
/// and drops it (also when the level failed).
async fn measure_level(
    client: &Client,
    url: &str,
    schema: &TableSchema,
    path: LoadPath,
    connections: usize,
    width: usize,
    settings: &Settings,
) -> Result<Level> {
    let rows = settings.probe.rows.get();
    let per_connection = rows.div_ceil(connections as u64).max(1);
    let per_copy = settings.load.chunk_lines.get().min(per_connection);
    let block_lines = settings.load.block_lines.get();
    let encode_schema = schema.clone();
    let copies: Vec<Copies> = tokio::task::spawn_blocking(move || {
        let encoder = BlockEncoder::new(&encode_schema, None, path)?;
        (0..connections)
            .map(|index| {
                let mine = per_connection.min(rows.saturating_sub(index as u64 * per_connection));
                encode_copies(&encoder, index, mine, per_copy, width, block_lines)
            })
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| invalid(format!("encoding the probe's rows died: {e}")))??;

    // A plain CREATE TABLE: a table of that name that is somehow there already fails the probe
    // instead of being copied into and dropped.
    let create =
        schema
            .create_table_sql()
            .replacen("CREATE TABLE IF NOT EXISTS", "CREATE TABLE", 1);
    client
        .batch_execute(&create)
        .await
        .map_err(CoordinatorError::db(
            "cannot create the probe's scratch table",
        ))?;
    let measured = copy_level(url, schema, path, copies, settings.probe.level_seconds).await;
    let drop = format!("DROP TABLE IF EXISTS {}", quote_ident(&schema.table));
    let dropped = client.batch_execute(&drop).await;
    let level = measured?;
    dropped.map_err(CoordinatorError::db(
        "cannot drop the probe's scratch table",
    ))?;
    Ok(Level {
        connections,
        ..level
    })
}

/// A COPY connection of the probe, as a run's loader has it.
enum Copier {
    /// PostgreSQL: binary COPY in a transaction.
    Transaction(Client),
    /// HeliosDB: CSV COPY in autocommit over the simple protocol.
    Autocommit(SimpleCopyClient),
}

impl Copier {
    async fn connect(url: &str, path: LoadPath) -> Result<Copier> {
        Ok(match path {
            LoadPath::CsvCopyAutocommit => {
                Copier::Autocommit(SimpleCopyClient::connect(url).await?)
            }
            _ => Copier::Transaction(ferry_worker::conn::loading(url).await?),
        })
    }

    /// Copies one COPY's rows and commits them; returns the rows the server stored.
    async fn copy(&mut self, statement: &str, data: Vec<u8>) -> Result<u64> {
        match self {
            Copier::Transaction(client) => {
                let db = CoordinatorError::db;
                client
                    .batch_execute("BEGIN")
                    .await
                    .map_err(db("cannot begin the probe's COPY"))?;
                let sink = client
                    .copy_in::<_, Bytes>(statement)
                    .await
                    .map_err(db("the target refused the probe's COPY"))?;
                let mut sink = Box::pin(sink);
                for part in [
                    Bytes::from_static(COPY_HEADER),
                    Bytes::from(data),
                    Bytes::from_static(COPY_TRAILER),
                ] {
                    sink.send(part)
                        .await
                        .map_err(db("cannot send the probe's rows"))?;
                }
                let rows = sink
                    .as_mut()
                    .finish()
                    .await
                    .map_err(db("the probe's COPY failed"))?;
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(db("cannot commit the probe's COPY"))?;
                Ok(rows)
            }
            Copier::Autocommit(copier) => {
                if let Some(error) = copier.start_copy(statement).await? {
                    return Err(invalid(format!(
                        "the target refused the probe's COPY: {error}"
                    )));
                }
                copier.send(&data).await?;
                match copier.finish().await? {
                    CopyResult::Copied(rows) => Ok(rows),
                    CopyResult::Refused(error) => {
                        Err(invalid(format!("the probe's COPY failed: {error}")))
                    }
                }
            }
        }
    }
}

/// Copies every connection's COPYs in parallel (connections opened before the clock starts); a
/// connection starts no COPY once `limit` has passed.
async fn copy_level(
    url: &str,
    schema: &TableSchema,
    path: LoadPath,
    copies: Vec<Copies>,
    limit: Duration,
) -> Result<Level> {
    let format = match path {
        LoadPath::CsvCopyAutocommit => "csv",
        _ => "binary",
    };
    let statement = format!(
        "COPY {} ({}) FROM STDIN (FORMAT {format})",
        quote_ident(&schema.table),
        schema.copy_column_list()
    );
    let mut copiers = Vec::with_capacity(copies.len());
    for _ in 0..copies.len() {
        copiers.push(Copier::connect(url, path).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut copier, mine) in copiers.into_iter().zip(copies) {
        let statement = statement.clone();
        tasks.push(tokio::spawn(async move {
            let (mut rows, mut bytes) = (0u64, 0u64);
            for (data, _) in mine {
                if started.elapsed() >= limit {
                    break;
                }
                let size = data.len() as u64;
                rows += copier.copy(&statement, data).await?;
                bytes += size;
            }
            Ok::<_, CoordinatorError>((rows, bytes))
        }));
    }
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok((r, b))) => {
                rows += r;
                bytes += b;
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(invalid(format!("a probe connection died: {e}")))),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Level {
        connections: 0,
        rows,
        bytes,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(1e-9),
        bytes_per_sec: bytes as f64 / seconds.max(1e-9),
    })
}

/// Records the probe in `ferry.probes` with the prepared [`sql::INSERT_PROBE`].
async fn record(
    client: &Client,
    insert: &tokio_postgres::Statement,
    report: &ProbeReport,
) -> Result<()> {
    let levels = serde_json::to_string(&report.levels)
        .map_err(|e| invalid(format!("cannot encode the levels: {e}")))?;
    let whole = |v: f64| v.round() as i64;
    let source_location = report.source.as_ref().map(|s| s.location.clone());
    let source_rate = report.source.as_ref().map(|s| whole(s.bytes_per_sec));
    let source_bytes = report.source.as_ref().map(|s| s.bytes as i64);
    client
        .execute(
            insert,
            &[
                &report.probe_id,
                &report.host,
                &(report.cores as i64),
                &report.server,
                &report.load_path,
                &report.items_source,
                &whole(report.decode_items_per_sec),
                &whole(report.read_items_per_sec),
                &whole(report.decode_only_items_per_sec),
                &whole(report.row_bytes),
                &whole(report.ceiling_rows_per_sec),
                &whole(report.ceiling_bytes_per_sec),
                &(report.ceiling_connections as i64),
                &levels,
                &source_location,
                &source_rate,
                &source_bytes,
            ],
        )
        .await
        .map_err(CoordinatorError::db(
            "cannot record the probe in ferry.probes",
        ))?;
    Ok(())
}

fn megabytes(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

impl ProbeReport {
    /// The report in words.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let kind = if self.server.to_ascii_lowercase().contains("heliosdb") {
            "HeliosDB"
        } else {
            "PostgreSQL"
        };
        let _ = writeln!(
            out,
            "probe {} on {} ({} cores); target {kind} (server {}), {} COPY",
            self.probe_id, self.host, self.cores, self.server, self.load_path
        );
        let _ = writeln!(
            out,
            "decode:  {:.0} items/s per core from gzip to {} COPY bytes (gunzip and framing alone \
             {:.0}, decoding alone {:.0}); one core, best of {DECODE_ROUNDS}, on {} {} of {:.0} \
             bytes on average",
            self.decode_items_per_sec,
            self.load_path,
            self.read_items_per_sec,
            self.decode_only_items_per_sec,
            self.decode_lines,
            self.items_source,
            self.line_bytes
        );
        let _ = writeln!(
            out,
            "target:  ceiling {:.0} rows/s ({}/s) at {} connection{}{}; synthetic rows of {:.0} COPY bytes",
            self.ceiling_rows_per_sec,
            megabytes(self.ceiling_bytes_per_sec),
            self.ceiling_connections,
            if self.ceiling_connections == 1 { "" } else { "s" },
            if self.saturated {
                String::new()
            } else {
                format!(
                    " (still rising at {}: the ceiling is at least this; raise probe.max_connections)",
                    self.levels.last().map(|l| l.connections).unwrap_or(1)
                )
            },
            self.row_bytes
        );
        let _ = writeln!(
            out,
            "  {:>11} {:>10} {:>9} {:>11} {:>9}",
            "connections", "rows", "seconds", "rows/s", "MB/s"
        );
        for level in &self.levels {
            let _ = writeln!(
                out,
                "  {:>11} {:>10} {:>9.2} {:>11.0} {:>9.1}",
                level.connections,
                level.rows,
                level.seconds,
                level.rows_per_sec,
                level.bytes_per_sec / 1e6
            );
        }
        match &self.source {
            Some(source) => {
                let _ = writeln!(
                    out,
                    "source:  {}/s reading {} of {} (one stream{})",
                    megabytes(source.bytes_per_sec),
                    megabytes(source.bytes as f64),
                    source.location,
                    if ferry_shared::store::is_s3(&source.location) {
                        ""
                    } else {
                        "; a local folder: the disk or the page cache, not S3"
                    }
                );
            }
            None => {
                let _ = writeln!(out, "source:  not measured (give --export to read one)");
            }
        }
        let _ = writeln!(
            out,
            "recorded in ferry.probes as {}; `plan --dry-run --target …` estimates from it",
            self.probe_id
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(connections: usize, rows_per_sec: f64) -> Level {
        Level {
            connections,
            rows: 1,
            bytes: 1,
            seconds: 1.0,
            rows_per_sec,
            bytes_per_sec: 1.0,
        }
    }

    #[test]
    fn levels_double_up_to_the_max() {
        assert_eq!(connection_levels(1), vec![1]);
        assert_eq!(connection_levels(4), vec![1, 2, 4]);
        assert_eq!(connection_levels(6), vec![1, 2, 4, 6]);
        assert_eq!(connection_levels(0), vec![1]);
    }

    #[test]
    fn saturation_of_the_measured_levels() {
        // Peak below the last level: saturated.
        assert!(saturated(&[
            level(1, 100.0),
            level(2, 180.0),
            level(4, 170.0)
        ]));
        // Last doubling gained 5%: saturated.
        assert!(saturated(&[
            level(1, 100.0),
            level(2, 180.0),
            level(4, 189.0)
        ]));
        // Still rising by 30%: a lower bound.
        assert!(!saturated(&[
            level(1, 100.0),
            level(2, 180.0),
            level(4, 234.0)
        ]));
        // One level tells nothing.
        assert!(!saturated(&[level(1, 100.0)]));
    }

    #[test]
    fn synthetic_lines_have_the_asked_width_and_decode() {
        let line = synthetic_line("c0", 42, 300);
        assert_eq!(line.len(), 300);
        assert!(line.contains(r#""PK":{"S":"c0-0000000042"}"#));
        // Narrower than its attributes: no padding, still whole.
        let short = synthetic_line("c0", 42, 10);
        assert!(short.ends_with(r#""}}}"#));
        let parsed = ferry_worker::decode::parse_item(line.as_bytes()).expect("parses");
        assert_eq!(parsed.len(), 9);
    }
}

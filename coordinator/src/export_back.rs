//! `export-back`: the rollback. A run's tables, as they are now (rows added or changed after the
//! migration included), written back as a DynamoDB import: gzip files of `{"Item":{…}}` lines in
//! DynamoDB JSON, the layout `ImportTable` reads (`InputFormat = DYNAMODB_JSON`,
//! `InputCompressionType = GZIP`, `S3KeyPrefix = <output>/data/`), in a folder or on S3.
//!
//! # Rows back to items
//! The run's schema (from the ledger) says how, so nothing has to be given again:
//! - table mode: each typed column is the attribute of its name and DynamoDB type; the overflow
//!   column's JSON object is expanded into attributes (plain JSON: objects → M, arrays → L, strings
//!   → S, numbers → N, booleans → BOOL, null → NULL; `nested_json = "dynamodb"`: the typed values as
//!   stored); a NULL column whose attribute the overflow records as `null` is `{"NULL":true}`;
//! - a routed run (single-table design) in reverse: every column that took an attribute whole is
//!   that attribute again, in the DynamoDB type of its column type (text → S, numeric and integers →
//!   N, boolean → BOOL, bytea → B, jsonb → its JSON, text[]/numeric[]/bytea[] → SS/NS/BS,
//!   timestamptz → N epoch seconds or milliseconds, or an ISO-8601 S, as its `time` says); the rest
//!   column's JSON is expanded; derived columns (regex captures such as ids from keys, map paths,
//!   constants) are dropped; the items of every routed table go into the one import, as they came
//!   from one DynamoDB table;
//! - `_ferry_chunk`, and columns the run's schema does not know (added after the migration), are
//!   not exported; numbers are written in DynamoDB's normal form (`12.50` → `12.5`), exact, never
//!   through a float (a `float8` column excepted: its value is what the database holds).
//!
//! Whatever the mapping could not carry back is listed in the summary as a difference class (a
//! transform's result, the TTL filter's skipped items, dropped attributes, time conversions, sets
//! in plain JSON, …): an item that differs from its original in any other way is a bug.
//!
//! # Exactly once, one table state, parallel
//! Each table is read in one pass over the simple query protocol (text results, streamed: HeliosDB
//! sends JSONB, arrays and times correctly only there) and its items are spread over `P` parts by a
//! hash of their DynamoDB key, `P` fixed by the table's row count and recorded in the part names
//! (`data/<table>-<n>-of-<P>.json.gz`). Parts are built in temporary files, compressed on rayon,
//! and each is published whole and never replaced ([`ferry_shared::output`]). Tables are exported
//! in parallel (`--workers`). The database is only read.
//!
//! # One snapshot for every table
//! On PostgreSQL one connection opens a `REPEATABLE READ READ ONLY` transaction and exports its
//! snapshot (`pg_export_snapshot()`), held open until every table is read; each reading connection
//! adopts it (`SET TRANSACTION SNAPSHOT`) before it counts or reads its table. The tables of a
//! routed run are so read at one moment: an item a transaction moves between tables meanwhile is
//! exported once. HeliosDB 4.41 has no exported snapshot: each table is read by its own statements, at its
//! own moment, and the summary says so ([`ReadConsistency`]).
//!
//! # Attempts: no part from another table state
//! Every command is an *attempt* with its own id, recorded with the run, the target and the
//! snapshot it read in the output's attempt marker (`_ferry_export_back.json`, [`MARKER`]), written
//! (create-only) before the first part and marked `complete` after the summary. Parts are never
//! reused across attempts: a PostgreSQL snapshot ends with its transaction and HeliosDB has none,
//! so no later process can prove it reads the table state an earlier attempt's parts were written
//! from. An output that already holds export-back files (parts, their counts, a summary or a
//! marker, of a complete or an interrupted attempt, or of a Ferry before markers) is refused unless
//! `--replace` is given, which removes exactly those files (the layout's own names, nothing else)
//! before the new attempt starts. A file in `data/` that export-back did not write is always
//! refused (`ImportTable` would import it). A part that appears under this attempt's name while it
//! runs, or a marker that is no longer this attempt's at the end, means another export-back writes
//! to the same output: the attempt fails.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_ledger::runs as ledger;
use ferry_ledger::RunRecord;
use ferry_shared::config::{AwsSettings, CopyFormat};
use ferry_shared::ident::{quote_ident, same_column_name};
use ferry_shared::output::{open_output, OutputStore, PutOutcome};
use ferry_shared::schema::routing::{Routing, TimeFormat, Transform};
use ferry_shared::schema::{NestedJson, TableSchema, PROVENANCE_COLUMN};
use ferry_worker::normal::{self, write_map, DValue, ItemPlan as TablePlan, Kind};
use ferry_worker::target::{Target, TargetKind};
use futures_util::StreamExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::{CoordinatorError, Result};

/// Rows converted per rayon task.
const BATCH_ROWS: usize = 2048;

/// The attempt marker: which run and attempt own the output's parts, and what they read.
pub const MARKER: &str = "_ferry_export_back.json";

/// The summary the command also prints.
pub const SUMMARY: &str = "export-back-summary.json";

/// The failpoint passed once the snapshot is taken and the attempt marker written, before any
/// table is read (tests hold the command there and change the tables).
pub const AFTER_SNAPSHOT_FAILPOINT: &str = "export_back_after_snapshot";

/// What to export, and where.
#[derive(Clone, Debug)]
pub struct ExportBackRequest {
    /// The database holding the tables and the ledger.
    pub target_url: String,
    /// The run.
    pub run_id: String,
    /// A folder or `s3://bucket/prefix/`.
    pub output: String,
    /// Items per part, at most (approximately: parts are hash buckets).
    pub part_items: u64,
    /// Tables exported at once.
    pub workers: usize,
    /// For an S3 output.
    pub aws: AwsSettings,
    /// Remove the export-back files an earlier attempt left in the output (else: refused).
    pub replace: bool,
}

/// Whether the tables were read in one snapshot, and which.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadConsistency {
    /// Every table was read in one snapshot.
    pub one_snapshot: bool,
    /// The exported snapshot (PostgreSQL's `pg_export_snapshot()`), when there was one.
    pub snapshot_id: Option<String>,
    /// In words.
    pub detail: String,
}

/// Where an attempt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Started: parts may be missing, and no later attempt can finish them.
    Running,
    /// Every part published and the summary written.
    Complete,
}

/// The attempt marker (`_ferry_export_back.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptMarker {
    /// The run whose tables were read.
    pub run_id: String,
    /// This attempt.
    pub attempt_id: String,
    /// Where it stands.
    pub state: AttemptState,
    /// When it started (UTC, RFC 3339).
    pub started_at: String,
    /// When it completed.
    pub completed_at: Option<String>,
    /// The server read (`server_version`).
    pub server: String,
    /// The table state read: one snapshot (and which) or not.
    pub consistency: ReadConsistency,
    /// The tables read.
    pub tables: Vec<String>,
    /// `--part-items`.
    pub part_items: u64,
    /// Items written, once complete.
    pub items: Option<u64>,
    /// Parts written, once complete.
    pub parts: Option<u64>,
}

/// A difference between the exported items and the export the run loaded, declared by the run's
/// mapping (not a fault).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The class: `derived_column`, `transform`, `filtered`, `dropped_attribute`, `column_type`,
    /// `time`, `null_or_absent`, `plain_json`, `rejected_at_load`, `unmapped_column`,
    /// `provenance`, `catch_all_keys`, `unreadable_column`.
    pub class: String,
    /// The table.
    pub table: String,
    /// The column or attribute, when it concerns one.
    pub column: Option<String>,
    /// In words.
    pub detail: String,
    /// How many items, when known.
    pub items: Option<u64>,
}

/// One table's export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableExport {
    /// The table.
    pub table: String,
    /// Rows the table holds (read in full by this command, or by the attempts before it).
    pub rows: u64,
    /// Items in its parts.
    pub items: u64,
    /// Parts.
    pub parts: u64,
    /// Compressed bytes of its parts.
    pub bytes: u64,
}

/// The command's summary (also written to `<output>/export-back-summary.json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportSummary {
    /// The run.
    pub run_id: String,
    /// This attempt (also in the output's attempt marker).
    pub attempt_id: String,
    /// Whether the tables were read in one snapshot.
    pub consistency: ReadConsistency,
    /// Files of an earlier export-back that `--replace` removed first.
    pub replaced_files: u64,
    /// Where the import is.
    pub output: String,
    /// Where `ImportTable` reads (`S3KeyPrefix`).
    pub import_prefix: String,
    /// The DynamoDB table the run came from.
    pub source_table: String,
    /// Its key attributes.
    pub key: Vec<String>,
    /// Per table.
    pub tables: Vec<TableExport>,
    /// Items over all tables.
    pub items: u64,
    /// Parts over all tables.
    pub parts: u64,
    /// Compressed bytes.
    pub bytes: u64,
    /// What the mapping did not carry back, by class.
    pub differences: Vec<Difference>,
    /// Rows that could not become items (the command exits 1).
    pub problems: Vec<String>,
    /// Wall time.
    pub seconds: f64,
    /// Rows read per second.
    pub rows_per_second: f64,
}

impl ExportSummary {
    /// The summary in words.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "export-back of run {} (DynamoDB table {:?}, key {})",
            self.run_id,
            self.source_table,
            self.key.join(", ")
        );
        let _ = writeln!(
            out,
            "import prefix: {} (DYNAMODB_JSON, GZIP)",
            self.import_prefix
        );
        let _ = writeln!(out, "attempt {}", self.attempt_id);
        let _ = writeln!(
            out,
            "{}: {}",
            if self.consistency.one_snapshot {
                "tables read in one snapshot"
            } else {
                "tables NOT read in one snapshot"
            },
            self.consistency.detail
        );
        if self.replaced_files > 0 {
            let _ = writeln!(
                out,
                "replaced: {} files of an earlier export-back removed first (--replace)",
                self.replaced_files
            );
        }
        for t in &self.tables {
            let _ = writeln!(
                out,
                "  {:<24} {:>10} rows  {:>10} items  {:>4} parts  {:>12} bytes",
                t.table, t.rows, t.items, t.parts, t.bytes
            );
        }
        let _ = writeln!(
            out,
            "total: {} items in {} parts, {} bytes, {:.1} s ({:.0} rows/s)",
            self.items, self.parts, self.bytes, self.seconds, self.rows_per_second
        );
        if !self.differences.is_empty() {
            let _ = writeln!(
                out,
                "differences from the original items, as the run's mapping declares them:"
            );
            for d in &self.differences {
                let _ = writeln!(
                    out,
                    "  [{}] {}{}: {}{}",
                    d.class,
                    d.table,
                    d.column
                        .as_ref()
                        .map(|c| format!(".{c}"))
                        .unwrap_or_default(),
                    d.detail,
                    d.items.map(|n| format!(" ({n} items)")).unwrap_or_default()
                );
            }
        }
        for problem in &self.problems {
            let _ = writeln!(out, "problem: {problem}");
        }
        out
    }
}

/// Exports the run's tables; see the module docs.
pub async fn export_back(request: &ExportBackRequest) -> Result<ExportSummary> {
    let started = Instant::now();
    let client = ferry_worker::conn::control(&request.target_url).await?;
    let run = crate::report::run_with_tables(&client, &request.run_id, "export-back", "").await?;
    let output: Arc<dyn OutputStore> = Arc::from(open_output(&request.output, &request.aws).await?);
    // Before anything is read or written: the output holds no other attempt's files (or they go).
    let replaced_files = clear_output(output.as_ref(), request.replace).await?;
    let (plans, mut differences) = plan_tables(&run);
    differences.extend(ledger_differences(&client, &run).await?);
    // A run planned by a Ferry that made dotted names columns on HeliosDB, which reads such a
    // column back as NULL: its values cannot be exported, and the summary says so.
    let target = Target::detect(&client, CopyFormat::Auto).await?;
    let column_names = target.column_names();
    for plan in &plans {
        let names = plan.columns.iter().map(|c| c.column.as_str());
        for name in names.chain(plan.rest.as_ref().map(|(r, _, _)| r.as_str())) {
            if let Some(why) = column_names.refusal(name) {
                differences.push(Difference {
                    class: "unreadable_column".into(),
                    table: plan.table.clone(),
                    column: Some(name.to_string()),
                    detail: format!("{why}: the exported items lack what the column holds"),
                    items: None,
                });
            }
        }
    }
    // Columns the run's schema does not know: listed, not exported. HeliosDB's catalog reports
    // a non-ASCII name as its UTF-8 bytes read as Latin-1, so names are matched as it reports them.
    for plan in &plans {
        let derived = derived_columns(&run, &plan.table);
        for column in live_columns(&client, &plan.table).await? {
            let known = plan
                .columns
                .iter()
                .map(|c| c.column.as_str())
                .chain(plan.rest.as_ref().map(|(r, _, _)| r.as_str()))
                .chain(std::iter::once(PROVENANCE_COLUMN))
                .chain(derived.iter().map(String::as_str))
                .any(|name| same_column_name(name, &column));
            if !known {
                differences.push(Difference {
                    class: "unmapped_column".into(),
                    table: plan.table.clone(),
                    column: Some(column),
                    detail: "a column no attribute filled (added by the config's DDL or after the migration): not exported".into(),
                    items: None,
                });
            }
        }
    }
    // The table state every table is read in: one exported snapshot on PostgreSQL, held by
    // `holder` until the last table is read.
    let (holder, consistency) = match target.kind {
        TargetKind::Postgres => {
            let (holder, id) = export_snapshot(&request.target_url).await?;
            let consistency = ReadConsistency {
                one_snapshot: true,
                detail: format!(
                    "PostgreSQL snapshot {id} (REPEATABLE READ, exported by pg_export_snapshot and adopted by every reading connection)"
                ),
                snapshot_id: Some(id),
            };
            (Some(holder), consistency)
        }
        TargetKind::HeliosDb => (
            None,
            ReadConsistency {
                one_snapshot: false,
                snapshot_id: None,
                detail: if plans.len() > 1 {
                    "HeliosDB has no exported snapshot: each table was read by its own statements at its own moment, so a row changed or moved between tables during the export may be missing or appear twice".into()
                } else {
                    "HeliosDB has no exported snapshot: the table was read by its own statements (its row count and its rows), not in a snapshot held across them".into()
                },
            },
        ),
    };
    let attempt_id = new_attempt_id();
    let mut marker = AttemptMarker {
        run_id: run.run_id.clone(),
        attempt_id: attempt_id.clone(),
        state: AttemptState::Running,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        completed_at: None,
        server: target.server_version.clone(),
        consistency: consistency.clone(),
        tables: plans.iter().map(|p| p.table.clone()).collect(),
        part_items: request.part_items,
        items: None,
        parts: None,
    };
    let marker_bytes =
        serde_json::to_vec_pretty(&marker).map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
    if output.put_new(MARKER, marker_bytes).await? == PutOutcome::Exists {
        return Err(CoordinatorError::Invalid(format!(
            "another export-back started writing to {} meanwhile (its attempt marker {MARKER} appeared): run one export-back per output",
            output.location("")
        )));
    }
    tracing::info!(run = %run.run_id, attempt = %attempt_id, one_snapshot = consistency.one_snapshot, snapshot = ?consistency.snapshot_id, "export-back attempt started");
    ferry_shared::failpoint::hit(AFTER_SNAPSHOT_FAILPOINT)
        .map_err(|e| CoordinatorError::Worker(e.into()))?;
    let mut summary = ExportSummary {
        run_id: run.run_id.clone(),
        attempt_id: attempt_id.clone(),
        consistency: consistency.clone(),
        replaced_files,
        output: output.location(""),
        import_prefix: output.location("data/"),
        source_table: run.target_table.clone(),
        key: run.schema.key_columns().map(|c| c.name.clone()).collect(),
        ..Default::default()
    };
    let semaphore = Arc::new(tokio::sync::Semaphore::new(request.workers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for plan in plans {
        let (semaphore, output, request) = (semaphore.clone(), output.clone(), request.clone());
        let (snapshot, attempt) = (consistency.snapshot_id.clone(), attempt_id.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire().await;
            let client = ferry_worker::conn::control(&request.target_url).await?;
            begin_reading(&client, snapshot.as_deref()).await?;
            let exported = export_table(
                &client,
                &plan,
                output.as_ref(),
                request.part_items,
                &request.run_id,
                &attempt,
            )
            .await?;
            if snapshot.is_some() {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(CoordinatorError::db("cannot end the reading transaction"))?;
            }
            Ok::<_, CoordinatorError>(exported)
        });
    }
    let mut problems = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (table, mut table_problems) =
            done.map_err(|e| CoordinatorError::Invalid(format!("export task died: {e}")))??;
        problems.append(&mut table_problems);
        summary.tables.push(table);
    }
    // Every table is read: the snapshot may go.
    if let Some(holder) = holder {
        holder
            .batch_execute("COMMIT")
            .await
            .map_err(CoordinatorError::db(
                "cannot end the snapshot's transaction",
            ))?;
    }
    summary.tables.sort_by(|a, b| a.table.cmp(&b.table));
    summary.items = summary.tables.iter().map(|t| t.items).sum();
    summary.parts = summary.tables.iter().map(|t| t.parts).sum();
    summary.bytes = summary.tables.iter().map(|t| t.bytes).sum();
    summary.differences = differences;
    summary.problems = problems;
    summary.seconds = started.elapsed().as_secs_f64();
    let rows: u64 = summary.tables.iter().map(|t| t.rows).sum();
    summary.rows_per_second = rows as f64 / summary.seconds.max(1e-6);
    // Still this attempt's output? (Another export-back with --replace may have taken it over.)
    let current = read_marker(output.as_ref()).await?;
    if current.as_ref().map(|m| m.attempt_id.as_str()) != Some(attempt_id.as_str()) {
        return Err(CoordinatorError::Invalid(format!(
            "the attempt marker {} is no longer this attempt's ({attempt_id}): another export-back wrote to the same output meanwhile; its parts and these cannot be told apart, export again with --replace",
            output.location(MARKER)
        )));
    }
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
    output.put(SUMMARY, json).await?;
    marker.state = AttemptState::Complete;
    marker.completed_at =
        Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    marker.items = Some(summary.items);
    marker.parts = Some(summary.parts);
    let marker_bytes =
        serde_json::to_vec_pretty(&marker).map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
    output.put(MARKER, marker_bytes).await?;
    tracing::info!(run = %summary.run_id, attempt = %attempt_id, items = summary.items, parts = summary.parts, bytes = summary.bytes, seconds = summary.seconds, one_snapshot = consistency.one_snapshot, "export-back finished");
    Ok(summary)
}

/// A new attempt's id: the time (UTC) and 64 random bits.
fn new_attempt_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut random = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random));
    let random = match read {
        Ok(()) => u64::from_le_bytes(random),
        // No /dev/urandom: the standard library's per-process random hash keys, with the pid.
        Err(_) => {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            hasher.finish()
        }
    };
    format!(
        "{}-{random:016x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")
    )
}

/// The form of a snapshot id `pg_export_snapshot()` returns (`00000003-0000001B-1`: hex digits
/// and dashes).
fn valid_snapshot_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b) || b == b'-')
}

/// Opens a `REPEATABLE READ` transaction on a connection of its own and exports its snapshot;
/// the connection must stay open (and idle in that transaction) until every table is read.
async fn export_snapshot(url: &str) -> Result<(Client, String)> {
    let holder = ferry_worker::conn::control(url).await?;
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(CoordinatorError::db(
            "cannot open the snapshot's transaction",
        ))?;
    let messages = holder
        .simple_query("SELECT pg_export_snapshot()")
        .await
        .map_err(CoordinatorError::db(
            "cannot export a snapshot (pg_export_snapshot) to read every table in",
        ))?;
    let id = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default();
    if !valid_snapshot_id(&id) {
        return Err(CoordinatorError::Invalid(format!(
            "pg_export_snapshot() returned {id:?}, not a snapshot id (hex digits and dashes)"
        )));
    }
    Ok((holder, id))
}

/// Starts a reading connection's transaction in the exported snapshot (PostgreSQL), or nothing
/// (HeliosDB: autocommit statements, as it has no exported snapshot).
async fn begin_reading(client: &Client, snapshot: Option<&str>) -> Result<()> {
    let Some(id) = snapshot else {
        return Ok(());
    };
    // SET TRANSACTION SNAPSHOT takes a string literal, not a bind parameter, so the id is
    // written into the statement. It is the server's own pg_export_snapshot() value, and is
    // checked (again, here) to be only hex digits and dashes: it cannot end the literal.
    if !valid_snapshot_id(id) {
        return Err(CoordinatorError::Invalid(format!(
            "{id:?} is not a snapshot id (hex digits and dashes)"
        )));
    }
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{id}'"
        ))
        .await
        .map_err(CoordinatorError::db(
            "cannot read in the export's snapshot (SET TRANSACTION SNAPSHOT)",
        ))
}

/// The output's attempt marker, if it has a readable one.
async fn read_marker(output: &dyn OutputStore) -> Result<Option<AttemptMarker>> {
    Ok(output
        .get(MARKER)
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Whether `key` (relative to the output) is a file export-back writes: a part in `data/`, its
/// counts in `parts/`, the summary, the attempt marker, or the hidden temporary file a local
/// write leaves when it dies (`.tmp-<name>-…`).
fn owned_by_layout(key: &str) -> bool {
    let (folder, name) = match key.rsplit_once('/') {
        Some((folder, name)) => (folder, name),
        None => ("", key),
    };
    let name = name
        .strip_prefix(".tmp-")
        .and_then(|rest| {
            // `.tmp-<name>-<pid>-<nanos>`: the name without its two numeric suffixes.
            let (rest, nanos) = rest.rsplit_once('-')?;
            let (rest, pid) = rest.rsplit_once('-')?;
            (nanos.bytes().all(|b| b.is_ascii_digit()) && pid.bytes().all(|b| b.is_ascii_digit()))
                .then_some(rest)
        })
        .unwrap_or(name);
    match folder {
        "" => name == MARKER || name == SUMMARY,
        "data" => parse_part_name(name).is_some(),
        "parts" => name
            .strip_suffix(".json")
            .is_some_and(|part| parse_part_name(part).is_some()),
        _ => false,
    }
}

/// Checks that the output holds no other attempt's files: refuses it when it does (or removes
/// them, with `replace`); returns how many files were removed. A file in `data/` that export-back
/// did not write is refused either way: `ImportTable` would import it with the parts.
async fn clear_output(output: &dyn OutputStore, replace: bool) -> Result<u64> {
    let mut owned = Vec::new();
    for prefix in ["data/", "parts/"] {
        for object in output.list(prefix).await? {
            if owned_by_layout(&object.key) {
                owned.push(object.key);
            } else if prefix == "data/" {
                return Err(CoordinatorError::Invalid(format!(
                    "output {} holds {}, which export-back did not write: ImportTable would import it with the parts; move it away or choose another --output (--replace removes only export-back's own files)",
                    output.location(""),
                    output.location(&object.key)
                )));
            }
        }
    }
    let marker = read_marker(output).await?;
    for key in [SUMMARY, MARKER] {
        if output.size(key).await?.is_some() {
            owned.push(key.to_string());
        }
    }
    if owned.is_empty() {
        return Ok(0);
    }
    let parts = owned
        .iter()
        .filter(|k| k.starts_with("data/") && !k.contains("/.tmp-"))
        .count();
    let what = match &marker {
        Some(m) if m.state == AttemptState::Complete => format!(
            "the complete attempt {} of run {}, started {}, {} parts",
            m.attempt_id, m.run_id, m.started_at, parts
        ),
        Some(m) => format!(
            "the unfinished attempt {} of run {}, started {}, {} parts",
            m.attempt_id, m.run_id, m.started_at, parts
        ),
        None => format!(
            "{parts} parts and no readable attempt marker (an older Ferry's export-back, or a damaged one)"
        ),
    };
    if !replace {
        return Err(CoordinatorError::Invalid(format!(
            "output {} already holds an export-back ({what}): those parts were read from another table state and are never reused; pass --replace to remove them (only export-back's own files) and export again, or choose another --output",
            output.location("")
        )));
    }
    // The marker last: until it goes, a crash here leaves an output that is still refused.
    owned.sort_by_key(|k| k == MARKER);
    for key in &owned {
        output.delete(key).await?;
    }
    tracing::info!(output = %output.location(""), files = owned.len(), parts, previous_attempt = ?marker.as_ref().map(|m| &m.attempt_id), "earlier export-back removed (--replace)");
    Ok(owned.len() as u64)
}

fn nested_of(schema: &TableSchema) -> NestedJson {
    schema.nested_json
}

/// The run's tables and how their rows become items ([`normal::item_plans`]), with the
/// differences the mapping declares.
fn plan_tables(run: &RunRecord) -> (Vec<TablePlan>, Vec<Difference>) {
    let schema = &run.schema;
    let keys: Vec<String> = schema.key_columns().map(|c| c.name.clone()).collect();
    let plans = normal::item_plans(schema);
    let mut differences = vec![Difference {
        class: "provenance".into(),
        table: "*".into(),
        column: Some(PROVENANCE_COLUMN.into()),
        detail: "Ferry's provenance column: not exported".into(),
        items: None,
    }];
    let Some(routing) = &schema.routing else {
        if nested_of(schema) == NestedJson::Plain {
            differences.push(Difference {
                class: "plain_json".into(),
                table: schema.table.clone(),
                column: Some(schema.overflow_column.clone()),
                detail: "mapping.nested_json = \"plain\": sets inside maps, lists and the overflow column come back as lists (SS/NS/BS → L), binary there as a base64 string (B → S); top-level typed columns keep their types".into(),
                items: None,
            });
        }
        return (plans, differences);
    };
    for table in routing.tables(&keys) {
        let rules: Vec<_> = routing
            .rules
            .iter()
            .filter(|r| r.table == table.table)
            .collect();
        let Some(first) = rules.first() else {
            differences.push(Difference {
                class: "catch_all_keys".into(),
                table: table.table.clone(),
                column: None,
                detail: "the catch-all table holds its keys as text: N and B keys come back as S"
                    .into(),
                items: None,
            });
            continue;
        };
        let mut exported: Vec<String> = Vec::new();
        for column in &first.columns {
            let Some(attribute) = normal::exported_whole(column).filter(|a| !exported.contains(a))
            else {
                differences.push(Difference {
                    class: "derived_column".into(),
                    table: table.table.clone(),
                    column: Some(column.name.clone()),
                    detail: format!(
                        "derived ({}): dropped, its source is exported",
                        describe_derivation(column)
                    ),
                    items: None,
                });
                continue;
            };
            exported.push(attribute.clone());
            let pg_type = column.pg_type();
            let kind = normal::kind_of(pg_type, column.time);
            let is_key = keys.contains(&attribute);
            if !is_key {
                differences.push(Difference {
                    class: "column_type".into(),
                    table: table.table.clone(),
                    column: Some(column.name.clone()),
                    detail: format!(
                        "attribute {attribute:?} comes back in the type of its {} column ({}), whatever type the item had",
                        pg_type.sql(),
                        kind_name(&kind)
                    ),
                    items: None,
                });
                if !column.required {
                    differences.push(Difference {
                        class: "null_or_absent".into(),
                        table: table.table.clone(),
                        column: Some(column.name.clone()),
                        detail: format!("a NULL attribute {attribute:?} and a missing one were both stored as NULL: exported as missing"),
                        items: None,
                    });
                }
            }
            if let Kind::Time(time) = &kind {
                differences.push(Difference {
                    class: "time".into(),
                    table: table.table.clone(),
                    column: Some(column.name.clone()),
                    detail: match time {
                        Some(TimeFormat::EpochSeconds) => "timestamptz back to epoch seconds (N), to the microsecond".into(),
                        Some(TimeFormat::EpochMillis) => "timestamptz back to epoch milliseconds (N)".into(),
                        _ => "timestamptz back to ISO-8601 text in UTC (S, `2024-01-15T10:00:00Z`, microseconds when not zero): the original's offset and spelling are not kept".into(),
                    },
                    items: None,
                });
            }
            if let Kind::Json(_) = kind {
                differences.push(Difference {
                    class: "plain_json".into(),
                    table: table.table.clone(),
                    column: Some(column.name.clone()),
                    detail: "jsonb holds plain JSON: sets inside come back as lists, binary as base64 strings".into(),
                    items: None,
                });
            }
            for rule in &rules {
                let transforms = rule
                    .columns
                    .iter()
                    .find(|c| c.name == column.name)
                    .map(|c| c.transform.clone())
                    .unwrap_or_default();
                if !transforms.is_empty() {
                    differences.push(Difference {
                        class: "transform".into(),
                        table: table.table.clone(),
                        column: Some(column.name.clone()),
                        detail: format!(
                            "rule {:?} stored {attribute:?} transformed ({}): exported as stored",
                            rule.name,
                            transforms
                                .iter()
                                .map(transform_name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        items: None,
                    });
                }
            }
        }
        for rule in &rules {
            for dropped in &rule.drop {
                differences.push(Difference {
                    class: "dropped_attribute".into(),
                    table: table.table.clone(),
                    column: Some(dropped.clone()),
                    detail: format!(
                        "rule {:?} drops attribute {dropped:?} at load: not in the table",
                        rule.name
                    ),
                    items: None,
                });
            }
        }
        differences.push(Difference {
            class: "plain_json".into(),
            table: table.table.clone(),
            column: Some(first.rest_column.clone()),
            detail: "the rest column holds plain JSON: sets come back as lists (SS/NS/BS → L), binary as base64 strings (B → S)".into(),
            items: None,
        });
    }
    (plans, differences)
}

fn describe_derivation(column: &ferry_shared::schema::routing::Column) -> String {
    match (
        &column.constant,
        &column.regex,
        column.source_path().as_slice(),
    ) {
        (Some(c), _, _) => format!("the constant {c:?}"),
        (None, Some(re), path) => format!("regex {re:?} over {}", path.join(".")),
        (None, None, path) => format!("path {}", path.join(".")),
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::S => "S",
        Kind::N => "N",
        Kind::B => "B",
        Kind::Bool => "BOOL",
        Kind::Json(_) => "M/L/S/N/BOOL/NULL by its JSON",
        Kind::Ss => "SS",
        Kind::Ns => "NS",
        Kind::Bs => "BS",
        Kind::Time(Some(TimeFormat::EpochSeconds | TimeFormat::EpochMillis)) => "N",
        Kind::Time(_) => "S",
    }
}

fn transform_name(transform: &Transform) -> &'static str {
    match transform {
        Transform::Trim => "trim",
        Transform::Lowercase => "lowercase",
        Transform::Hash => "hash",
        Transform::Redact => "redact",
    }
}

/// The columns of `table` that a routed run derives (not exported, not "unmapped").
fn derived_columns(run: &RunRecord, table: &str) -> HashSet<String> {
    let Some(routing) = &run.schema.routing else {
        return HashSet::new();
    };
    routing_columns(routing, table)
}

fn routing_columns(routing: &Routing, table: &str) -> HashSet<String> {
    routing
        .rules
        .iter()
        .filter(|r| r.table == table)
        .flat_map(|r| r.columns.iter().map(|c| c.name.clone()))
        .collect()
}

/// Differences the ledger counts: items the routing filtered, and lines rejected at load.
async fn ledger_differences(client: &Client, run: &RunRecord) -> Result<Vec<Difference>> {
    let shards = ledger::get_shards(client, &run.run_id).await?;
    let filtered: u64 = shards.iter().map(|s| s.filtered_rows).sum();
    let rejected: u64 = shards.iter().map(|s| s.rejected_rows).sum();
    let mut out = Vec::new();
    if let Some(routing) = &run.schema.routing {
        let filters: Vec<String> = routing
            .rules
            .iter()
            .flat_map(|r| {
                r.skip_expired_ttl
                    .iter()
                    .map(move |ttl| {
                        format!(
                            "rule {:?} skips items whose TTL {ttl:?} expired before the export",
                            r.name
                        )
                    })
                    .chain(r.skip_when.iter().map(move |w| {
                        format!(
                            "rule {:?} skips items whose {:?} is {:?}",
                            r.name, w.attribute, w.equals
                        )
                    }))
            })
            .collect();
        if !filters.is_empty() || filtered > 0 {
            out.push(Difference {
                class: "filtered".into(),
                table: "*".into(),
                column: None,
                detail: format!(
                    "items filtered at load are not in the tables: {}",
                    filters.join("; ")
                ),
                items: Some(filtered),
            });
        }
    }
    if rejected > 0 {
        out.push(Difference {
            class: "rejected_at_load".into(),
            table: "*".into(),
            column: None,
            detail: "lines rejected at load are in ferry.rejects, not in the tables".into(),
            items: Some(rejected),
        });
    }
    Ok(out)
}

/// The table's columns as the database has them now.
async fn live_columns(client: &Client, table: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1::text",
            &[&table],
        )
        .await
        .map_err(CoordinatorError::db("cannot read the table's columns"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `<table>-<n>-of-<P>.json.gz` → (table, n, P).
fn parse_part_name(name: &str) -> Option<(&str, u64, u64)> {
    let rest = name.strip_suffix(".json.gz")?;
    let (rest, total) = rest.rsplit_once("-of-")?;
    let (table, part) = rest.rsplit_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if table.is_empty() || !digits(part) || !digits(total) {
        return None;
    }
    Some((table, part.parse().ok()?, total.parse().ok()?))
}

fn part_name(table: &str, part: u64, total: u64) -> String {
    format!("{table}-{part:05}-of-{total:05}.json.gz")
}

/// FNV-1a of the key's text: the part an item belongs to.
fn key_hash(values: &[&DValue]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for value in values {
        let text = match value {
            DValue::S(s) | DValue::N(s) => s.as_bytes().to_vec(),
            DValue::B(b) => b.clone(),
            other => format!("{other:?}").into_bytes(),
        };
        for b in text.iter().chain(std::iter::once(&0xff)) {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

struct Part {
    writer: Mutex<Option<flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>>>>,
    path: std::path::PathBuf,
    items: std::sync::atomic::AtomicU64,
}

/// Exports one table; returns its line in the summary and the rows that could not be exported.
async fn export_table(
    client: &Client,
    plan: &TablePlan,
    output: &dyn OutputStore,
    part_items: u64,
    run_id: &str,
    attempt_id: &str,
) -> Result<(TableExport, Vec<String>)> {
    let table = &plan.table;
    // Counted in the same snapshot as the rows are read (PostgreSQL): the part count fits them.
    let rows_now = count_rows(client, table).await?;
    let total = rows_now.div_ceil(part_items).max(1);
    let mut export = TableExport {
        table: table.clone(),
        parts: total,
        ..Default::default()
    };
    let work = tempfile::tempdir().map_err(|source| ferry_shared::Error::Io {
        location: "a temporary folder".into(),
        source,
    })?;
    let parts: Arc<Vec<Part>> = Arc::new(
        (0..total)
            .map(|n| {
                let path = work.path().join(format!("part-{n}"));
                let file =
                    std::fs::File::create(&path).map_err(|source| ferry_shared::Error::Io {
                        location: path.display().to_string(),
                        source,
                    })?;
                Ok(Part {
                    writer: Mutex::new(Some(flate2::write::GzEncoder::new(
                        std::io::BufWriter::with_capacity(256 * 1024, file),
                        flate2::Compression::new(6),
                    ))),
                    path,
                    items: Default::default(),
                })
            })
            .collect::<Result<Vec<_>>>()?,
    );
    let plan = Arc::new(plan.clone());
    let select: Vec<String> = plan.copy_columns.iter().map(|c| quote_ident(c)).collect();
    let sql = format!("SELECT {} FROM {}", select.join(", "), quote_ident(table));
    let stream = client
        .simple_query_raw(&sql)
        .await
        .map_err(read_error(table))?;
    futures_util::pin_mut!(stream);
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut batch: Vec<Vec<Option<String>>> = Vec::with_capacity(BATCH_ROWS);
    let mut pending = Vec::new();
    let mut rows = 0u64;
    let flush = |batch: Vec<Vec<Option<String>>>| {
        let (plan, parts, problems) = (plan.clone(), parts.clone(), problems.clone());
        tokio::task::spawn_blocking(move || write_rows(&plan, &parts, batch, &problems))
    };
    while let Some(message) = stream.next().await {
        let message = message.map_err(read_error(table))?;
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        rows += 1;
        batch.push(
            (0..row.len())
                .map(|i| row.get(i).map(str::to_string))
                .collect(),
        );
        if batch.len() >= BATCH_ROWS {
            pending.push(flush(std::mem::take(&mut batch)));
            // Bounded memory: at most a few batches in flight.
            if pending.len() >= 8 {
                pending
                    .remove(0)
                    .await
                    .map_err(|e| CoordinatorError::Invalid(e.to_string()))??;
            }
        }
    }
    if !batch.is_empty() {
        pending.push(flush(batch));
    }
    for task in pending {
        task.await
            .map_err(|e| CoordinatorError::Invalid(e.to_string()))??;
    }
    export.rows = rows;
    // Publish every part. The output held none when this attempt started ([`clear_output`]): a
    // part that exists now was written by another export-back into the same output.
    for (n, part) in parts.iter().enumerate() {
        let encoder = part
            .writer
            .lock()
            .expect("part lock")
            .take()
            .expect("each part once");
        let path = part.path.clone();
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut inner = encoder.finish()?;
            inner.flush()?;
            drop(inner);
            std::fs::read(&path)
        })
        .await
        .map_err(|e| CoordinatorError::Invalid(e.to_string()))?
        .map_err(|source| ferry_shared::Error::Io {
            location: part.path.display().to_string(),
            source,
        })?;
        let key = format!("data/{}", part_name(table, n as u64, total));
        let size = bytes.len() as u64;
        let items = part.items.load(std::sync::atomic::Ordering::Relaxed);
        if output.put_new(&key, bytes).await? == PutOutcome::Exists {
            return Err(CoordinatorError::Invalid(format!(
                "{} appeared while attempt {attempt_id} was writing it: another export-back writes to the same output; run one per output, then export again with --replace",
                output.location(&key)
            )));
        }
        export.items += items;
        export.bytes += size;
        let sidecar = serde_json::json!({
            "items": items,
            "bytes": size,
            "run_id": run_id,
            "attempt_id": attempt_id,
        });
        output
            .put(
                &format!("parts/{}.json", part_name(table, n as u64, total)),
                sidecar.to_string().into_bytes(),
            )
            .await?;
    }
    let problems = std::mem::take(&mut *problems.lock().expect("problems lock"));
    tracing::info!(table = %table, rows, items = export.items, parts = total, attempt = %attempt_id, "table exported");
    Ok((export, problems))
}

fn read_error(table: &str) -> impl FnOnce(tokio_postgres::Error) -> CoordinatorError {
    let context = format!("cannot read table {table:?}");
    move |source| CoordinatorError::Worker(ferry_worker::WorkerError::Db { context, source })
}

async fn count_rows(client: &Client, table: &str) -> Result<u64> {
    let sql = format!("SELECT count(*) FROM {}", quote_ident(table));
    let messages = client.simple_query(&sql).await.map_err(read_error(table))?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|t| t.parse().ok()),
            _ => None,
        })
        .unwrap_or(0))
}

/// Converts a batch of rows (rayon) and appends each item's line to its part.
fn write_rows(
    plan: &TablePlan,
    parts: &[Part],
    rows: Vec<Vec<Option<String>>>,
    problems: &Mutex<Vec<String>>,
) -> Result<()> {
    let total = parts.len() as u64;
    let lines: Vec<std::result::Result<(u64, String), String>> = rows
        .par_iter()
        .map(|row| {
            let item = normal::row_to_item(plan, row)?;
            let key: Vec<&DValue> = plan.keys.iter().filter_map(|k| item.get(k)).collect();
            if key.len() != plan.keys.len() {
                return Err(format!(
                    "a row of {} has no key ({})",
                    plan.table,
                    plan.keys.join(", ")
                ));
            }
            let part = key_hash(&key) % total;
            let mut line = String::with_capacity(256);
            line.push_str("{\"Item\":");
            write_map(&mut line, &item);
            line.push_str("}\n");
            Ok((part, line))
        })
        .collect();
    let mut by_part: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    for line in lines {
        match line {
            Ok((part, text)) => {
                let entry = by_part.entry(part).or_default();
                entry.0.push_str(&text);
                entry.1 += 1;
            }
            Err(problem) => problems.lock().expect("problems lock").push(problem),
        }
    }
    by_part.into_par_iter().try_for_each(|(n, (text, count))| {
        let part = &parts[n as usize];
        let mut writer = part.writer.lock().expect("part lock");
        writer
            .as_mut()
            .expect("open until published")
            .write_all(text.as_bytes())
            .map_err(|source| {
                CoordinatorError::from(ferry_shared::Error::Io {
                    location: part.path.display().to_string(),
                    source,
                })
            })?;
        part.items
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_read_back() {
        assert_eq!(
            parse_part_name("orders-00003-of-00010.json.gz"),
            Some(("orders", 3, 10))
        );
        assert_eq!(
            parse_part_name("user-orders-00003-of-00010.json.gz"),
            Some(("user-orders", 3, 10))
        );
        assert_eq!(parse_part_name("orders-x-of-00010.json.gz"), None);
        assert_eq!(parse_part_name("orders.json.gz"), None);
    }

    #[test]
    fn snapshot_ids_are_checked_before_they_reach_sql() {
        assert!(valid_snapshot_id("00000003-0000001B-1"));
        assert!(!valid_snapshot_id(""));
        assert!(!valid_snapshot_id("00000003-0000001B-1'; DROP TABLE t; --"));
        assert!(!valid_snapshot_id("0000000a-1"));
        assert!(!valid_snapshot_id(&"1".repeat(65)));
    }

    #[test]
    fn the_summary_says_whether_the_tables_were_read_in_one_snapshot() {
        let mut summary = ExportSummary {
            attempt_id: "20260101T000000000Z-00000000000000ff".into(),
            consistency: ReadConsistency {
                one_snapshot: false,
                snapshot_id: None,
                detail: "HeliosDB has no exported snapshot".into(),
            },
            ..Default::default()
        };
        let text = summary.to_text();
        assert!(
            text.contains("tables NOT read in one snapshot: HeliosDB has no exported snapshot"),
            "{text}"
        );
        assert!(text.contains("attempt 20260101T000000000Z-00000000000000ff"));
        summary.consistency = ReadConsistency {
            one_snapshot: true,
            snapshot_id: Some("00000003-0000001B-1".into()),
            detail: "PostgreSQL snapshot 00000003-0000001B-1".into(),
        };
        summary.replaced_files = 4;
        let text = summary.to_text();
        assert!(
            text.contains("tables read in one snapshot: PostgreSQL snapshot 00000003-0000001B-1"),
            "{text}"
        );
        assert!(text.contains("replaced: 4 files"), "{text}");
    }

    #[test]
    fn only_the_layouts_own_files_are_owned() {
        for key in [
            MARKER,
            SUMMARY,
            "data/orders-00000-of-00002.json.gz",
            "data/.tmp-orders-00001-of-00002.json.gz-4242-1712345678901234567",
            "parts/orders-00000-of-00002.json.gz.json",
            ".tmp-_ferry_export_back.json-17-99",
        ] {
            assert!(owned_by_layout(key), "{key}");
        }
        for key in [
            "data/notes.txt",
            "data/orders.json.gz",
            "data/sub/orders-00000-of-00002.json.gz",
            "parts/readme.json",
            "other/orders-00000-of-00002.json.gz",
            "summary.json",
            "data/.tmp-notes.txt-1-2",
        ] {
            assert!(!owned_by_layout(key), "{key}");
        }
    }
}

//! A run's records in the ledger (runs, shards, rejects, post-load steps, target tokens) and the
//! functions that read and write them on a tokio-postgres client (statements in [`crate::sql`]);
//! creating and migrating the schema. A shard's generations and loads, which the chunk driver
//! changes, are [`crate::protocol`]'s.

use crate::sql;
use ferry_shared::manifest::DataFile;
use ferry_shared::schema::TableSchema;
use serde::Serialize;
use tokio_postgres::{Client, GenericClient, Row};

use crate::{LedgerError, Result};

/// A run as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    /// The run.
    pub run_id: String,
    /// Where the export is (a folder or URL).
    pub export_location: String,
    /// The export's ARN, when it had a manifest.
    pub export_arn: Option<String>,
    /// The export's point in time.
    pub export_time: Option<String>,
    /// The target table.
    pub target_table: String,
    /// The resolved schema every worker loads with.
    pub schema: TableSchema,
    /// Lines per chunk, fixed for the run.
    pub chunk_lines: u64,
    /// Rejects tolerated.
    pub max_rejects: u64,
    /// Whether the manifests were present and verified.
    pub manifest_verified: bool,
    /// Items per the manifest.
    pub manifest_items: Option<u64>,
    /// `loading`, `complete` or `failed`.
    pub state: String,
    /// How the run loads (`binary`, `csv`, `insert`), chosen at plan; `None` for runs planned
    /// before it was recorded.
    pub load_path: Option<String>,
}

impl ShardRecord {
    /// A pending shard for unit tests (the in-memory ledger and targets), nothing committed yet.
    pub fn for_test(
        shard_id: &str,
        data_key: &str,
        item_count: u64,
        md5_checksum: Option<String>,
    ) -> ShardRecord {
        ShardRecord {
            shard_id: shard_id.into(),
            data_key: data_key.into(),
            item_count: Some(item_count),
            md5_checksum,
            size_bytes: None,
            committed_lines: 0,
            loaded_rows: 0,
            rejected_rows: 0,
            filtered_rows: 0,
            spilled_values: 0,
            items_seen: None,
            md5_ok: None,
            state: sql::shard_state::PENDING.into(),
            error: None,
            generation: 0,
            copying_from: None,
        }
    }
}

impl RunRecord {
    /// A run for unit tests (the in-memory ledger and targets): `schema`, from the export in
    /// `dir`, `chunk_lines` lines a chunk, `items` items by the manifest, loading the way
    /// `load_path` says.
    pub fn for_test(
        run_id: &str,
        dir: &std::path::Path,
        schema: TableSchema,
        chunk_lines: u64,
        items: u64,
        load_path: Option<&str>,
    ) -> RunRecord {
        RunRecord {
            run_id: run_id.into(),
            export_location: dir.display().to_string(),
            export_arn: None,
            export_time: None,
            target_table: "t".into(),
            schema,
            chunk_lines,
            max_rejects: 100,
            manifest_verified: true,
            manifest_items: Some(items),
            state: "loading".into(),
            load_path: load_path.map(str::to_string),
        }
    }
}

/// A shard as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardRecord {
    /// The shard.
    pub shard_id: String,
    /// Its data file's key in the store.
    pub data_key: String,
    /// Items per the manifest.
    pub item_count: Option<u64>,
    /// MD5 per the manifest.
    pub md5_checksum: Option<String>,
    /// Stored size.
    pub size_bytes: Option<u64>,
    /// The checkpoint: input lines durably loaded.
    pub committed_lines: u64,
    /// Rows loaded.
    pub loaded_rows: u64,
    /// Lines rejected.
    pub rejected_rows: u64,
    /// Items filtered out by transforms.
    pub filtered_rows: u64,
    /// Values sent to the overflow column for a type mismatch.
    pub spilled_values: u64,
    /// Items the file held, once read to the end.
    pub items_seen: Option<u64>,
    /// Whether the MD5 matched (NULL: not known or no manifest).
    pub md5_ok: Option<bool>,
    /// `pending`, `done` or `failed`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Raised each time the shard's rows are removed to load it again.
    pub generation: i64,
    /// The chunk (its first line) whose rows may be ahead of the checkpoint (autocommit path).
    pub copying_from: Option<u64>,
}

impl ShardRecord {
    /// Loaded + rejected + filtered equals the manifest's count (or the items seen, unverified),
    /// the MD5 held, and the shard is done.
    pub fn reconciled(&self) -> bool {
        let accounted = self.loaded_rows + self.rejected_rows + self.filtered_rows;
        self.state == sql::shard_state::DONE
            && self.md5_ok != Some(false)
            && self.item_count.or(self.items_seen) == Some(accounted)
    }
}

fn u64_of(row: &Row, column: &str) -> u64 {
    row.get::<_, i64>(column).max(0) as u64
}

fn opt_u64_of(row: &Row, column: &str) -> Option<u64> {
    row.get::<_, Option<i64>>(column).map(|v| v.max(0) as u64)
}

fn run_of(row: &Row) -> Result<RunRecord> {
    let schema_json: String = row.get("schema_json");
    let schema = serde_json::from_str(&schema_json)
        .map_err(|e| LedgerError::Unexpected(format!("run schema does not parse: {e}")))?;
    Ok(RunRecord {
        run_id: row.get("run_id"),
        export_location: row.get("export_location"),
        export_arn: row.get("export_arn"),
        export_time: row.get("export_time"),
        target_table: row.get("target_table"),
        schema,
        chunk_lines: u64_of(row, "chunk_lines"),
        max_rejects: u64_of(row, "max_rejects"),
        manifest_verified: row.get("manifest_verified"),
        manifest_items: opt_u64_of(row, "manifest_items"),
        state: row.get("state"),
        load_path: row.get("load_path"),
    })
}

pub(crate) fn shard_of(row: &Row) -> ShardRecord {
    ShardRecord {
        shard_id: row.get("shard_id"),
        data_key: row.get("data_key"),
        item_count: opt_u64_of(row, "item_count"),
        md5_checksum: row.get("md5_checksum"),
        size_bytes: opt_u64_of(row, "size_bytes"),
        committed_lines: u64_of(row, "committed_lines"),
        loaded_rows: u64_of(row, "loaded_rows"),
        rejected_rows: u64_of(row, "rejected_rows"),
        filtered_rows: u64_of(row, "filtered_rows"),
        spilled_values: u64_of(row, "spilled_values"),
        items_seen: opt_u64_of(row, "items_seen"),
        md5_ok: row.get("md5_ok"),
        state: row.get("state"),
        error: row.get("error"),
        generation: row.get("generation"),
        copying_from: opt_u64_of(row, "copying_from"),
    }
}

/// The target token of `run_id` in this ledger, if it has one.
pub async fn run_token(client: &impl GenericClient, run_id: &str) -> Result<Option<String>> {
    let row = client
        .query_opt(sql::SELECT_RUN_TOKEN, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run's target token"))?;
    Ok(row.map(|r| r.get(0)))
}

/// 128 random bits as hex.
fn random_token() -> Result<String> {
    use std::io::Read;
    let mut random = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(|e| LedgerError::Unexpected(format!("cannot read /dev/urandom: {e}")))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

/// This ledger's target token, if one was made.
pub async fn target_token(client: &impl GenericClient) -> Result<Option<String>> {
    let row = client
        .query_opt(sql::SELECT_TARGET_TOKEN, &[])
        .await
        .map_err(LedgerError::db("cannot read the ledger's target token"))?;
    Ok(row.map(|r| r.get(0)))
}

/// This ledger's target token, made (random) the first time: the tag of the queues that serve
/// this target.
pub async fn ensure_target_token(client: &impl GenericClient) -> Result<String> {
    let token = random_token()?;
    client
        .execute(sql::INSERT_TARGET_TOKEN, &[&token])
        .await
        .map_err(LedgerError::db("cannot record the ledger's target token"))?;
    target_token(client)
        .await?
        .ok_or_else(|| LedgerError::Unexpected("the ledger has no target token".into()))
}

/// The target token of `run_id`, made (random) the first time: what its queue messages carry.
pub async fn ensure_run_token(client: &impl GenericClient, run_id: &str) -> Result<String> {
    let token = random_token()?;
    client
        .execute(sql::INSERT_RUN_TOKEN, &[&run_id, &token])
        .await
        .map_err(LedgerError::db("cannot record the run's target token"))?;
    run_token(client, run_id)
        .await?
        .ok_or_else(|| LedgerError::Unexpected(format!("run {run_id} has no target token")))
}

/// Creates the ledger schema when missing and migrates it in place to [`sql::SCHEMA_VERSION`];
/// refuses a ledger written by a newer Ferry.
///
/// Every statement is idempotent, but PostgreSQL runs two concurrent `CREATE … IF NOT EXISTS` of
/// one name into a unique violation of its catalog (`pg_type_typname_nsp_index`) or a "type
/// already exists" error: two processes starting on a fresh target at once (racing `migrate`s,
/// workers started beside `plan`) made one of them exit 2, found by `tests/tests/sequences.rs`.
/// Such an error is the other process's statement having won; the whole sequence is run again
/// (it then finds everything there), a few times with a growing pause.
pub async fn ensure_ledger(client: &Client) -> Result<()> {
    const ATTEMPTS: u32 = 6;
    let mut attempt = 1;
    loop {
        match ensure_ledger_once(client).await {
            Err(e) if attempt < ATTEMPTS && lost_ddl_race(&e) => {
                tracing::debug!(attempt, error = %e, "the ledger was being created by another process: again");
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A ledger error that is [`is_ddl_race`].
fn lost_ddl_race(error: &LedgerError) -> bool {
    matches!(error, LedgerError::Db { source, .. } if is_ddl_race(source))
}

/// A catalog conflict of two concurrent `CREATE`/`ALTER … IF NOT EXISTS` of the same object: the
/// other statement won, and the object is there.
pub fn is_ddl_race(source: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    source.code().is_some_and(|code| {
        [
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_OBJECT,
            SqlState::DUPLICATE_SCHEMA,
            SqlState::DUPLICATE_COLUMN,
        ]
        .contains(code)
    })
}

async fn ensure_ledger_once(client: &Client) -> Result<()> {
    for statement in sql::CREATE_LEDGER {
        client
            .batch_execute(statement)
            .await
            .map_err(LedgerError::db("cannot create the ferry ledger"))?;
    }
    let version = ledger_version(client).await?;
    if version > sql::SCHEMA_VERSION {
        return Err(LedgerError::Unexpected(format!(
            "the ferry ledger in this database has schema version {version}, written by a newer \
             Ferry; this one knows version {}: upgrade Ferry",
            sql::SCHEMA_VERSION
        )));
    }
    let mut migrated = None;
    for (target, statements) in sql::MIGRATIONS {
        if *target <= version {
            continue;
        }
        for statement in *statements {
            client.batch_execute(statement).await.map_err(LedgerError::db(
                "cannot migrate the ferry ledger (run the newest Ferry once with rights to alter it)",
            ))?;
        }
        client
            .execute(sql::SET_SCHEMA_VERSION, &[&target.to_string()])
            .await
            .map_err(LedgerError::db("cannot record the ledger's schema version"))?;
        migrated = Some(*target);
    }
    if let Some(to) = migrated {
        // A ledger just created is brought to the newest version as part of its creation: worth
        // a line only when it already held runs.
        let held_runs = client
            .query_opt(sql::ANY_RUN, &[])
            .await
            .map(|row| row.is_some())
            .unwrap_or(true);
        if held_runs {
            tracing::info!(from = version, to, "migrated the ferry ledger");
        } else {
            tracing::debug!(version = to, "created the ferry ledger");
        }
    }
    Ok(())
}

/// The ledger's schema version (1 when none is recorded: a ledger from before versions).
pub async fn ledger_version(client: &impl GenericClient) -> Result<i64> {
    let row = client
        .query_opt(sql::SELECT_SCHEMA_VERSION, &[])
        .await
        .map_err(LedgerError::db("cannot read the ledger's schema version"))?;
    match row {
        None => Ok(1),
        Some(row) => {
            let text: String = row.get(0);
            text.parse().map_err(|_| {
                LedgerError::Unexpected(format!(
                    "the ledger's schema_version {text:?} is not a number"
                ))
            })
        }
    }
}

/// The run, if the ledger has it.
pub async fn get_run(client: &impl GenericClient, run_id: &str) -> Result<Option<RunRecord>> {
    let row = client
        .query_opt(sql::SELECT_RUN, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run"))?;
    row.as_ref().map(run_of).transpose()
}

/// Records a new run and its shards in one transaction (a run already there is left as it is).
///
/// Two coordinators planning the same run at the same moment (two `migrate`s started at once)
/// both insert it. PostgreSQL's `ON CONFLICT DO NOTHING` waits for the other transaction and
/// skips; HeliosDB 4.41 reports a duplicate key instead. Either way the other's run and shards,
/// written in one transaction, are the run: this waits (up to [`RACE_WAIT`]) until they are
/// visible and leaves them as they are. Found by the command-sequence test (two racing `migrate`s
/// on HeliosDB, one of them exiting 2 with "Duplicate key … ferry.runs_pkey").
pub async fn insert_run(client: &mut Client, run: &RunRecord, files: &[DataFile]) -> Result<()> {
    match insert_run_once(client, run, files).await {
        Err(error)
            if error
                .db_source()
                .is_some_and(crate::error::is_unique_violation) =>
        {
            let started = std::time::Instant::now();
            while started.elapsed() < RACE_WAIT {
                if get_run(client, &run.run_id).await?.is_some() {
                    tracing::info!(run = %run.run_id, "another coordinator recorded this run at the same moment: joining it");
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error)
        }
        other => other,
    }
}

/// How long [`insert_run`] waits for a racing coordinator's copy of the run to commit.
pub const RACE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn insert_run_once(client: &mut Client, run: &RunRecord, files: &[DataFile]) -> Result<()> {
    let schema_json =
        serde_json::to_string(&run.schema).map_err(|e| LedgerError::Unexpected(e.to_string()))?;
    let tx = client
        .transaction()
        .await
        .map_err(LedgerError::db("cannot start the plan transaction"))?;
    tx.execute(
        sql::INSERT_RUN,
        &[
            &run.run_id,
            &run.export_location,
            &run.export_arn,
            &run.export_time,
            &run.target_table,
            &schema_json,
            &(run.chunk_lines as i64),
            &(run.max_rejects as i64),
            &run.manifest_verified,
            &run.manifest_items.map(|n| n as i64),
            &run.state,
            &run.load_path,
        ],
    )
    .await
    .map_err(LedgerError::db("cannot record the run"))?;
    let insert = tx
        .prepare(sql::INSERT_SHARD)
        .await
        .map_err(LedgerError::db("cannot prepare shard insert"))?;
    for file in files {
        tx.execute(
            &insert,
            &[
                &run.run_id,
                &file.shard_id,
                &file.key,
                &file.item_count.map(|n| n as i64),
                &file.md5_checksum,
                &(file.size as i64),
            ],
        )
        .await
        .map_err(LedgerError::db("cannot record a shard"))?;
    }
    tx.commit()
        .await
        .map_err(LedgerError::db("cannot commit the plan"))
}

/// Every shard of a run, by shard id.
pub async fn get_shards(client: &impl GenericClient, run_id: &str) -> Result<Vec<ShardRecord>> {
    let rows = client
        .query(sql::SELECT_SHARDS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read shards"))?;
    Ok(rows.iter().map(shard_of).collect())
}

/// How long each done shard of a run took to load: from the start of the load that finished it
/// to its last ledger update, in seconds, by shard id (shards loaded before the ledger recorded
/// loads have none).
pub async fn shard_seconds(
    client: &impl GenericClient,
    run_id: &str,
) -> Result<std::collections::HashMap<String, f64>> {
    let rows = client
        .query(sql::SELECT_SHARD_SECONDS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the shards' load times"))?;
    let mut seconds: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    for row in rows {
        let (shard, took): (String, f64) = (row.get(0), row.get(1));
        // The shortest: an earlier generation's load started before the one that finished.
        let entry = seconds.entry(shard).or_insert(took);
        *entry = entry.min(took);
    }
    Ok(seconds)
}

/// Sets the run's `max_rejects`.
pub async fn set_max_rejects(
    client: &impl GenericClient,
    run_id: &str,
    max_rejects: u64,
) -> Result<()> {
    client
        .execute(sql::SET_MAX_REJECTS, &[&run_id, &(max_rejects as i64)])
        .await
        .map_err(LedgerError::db("cannot update max_rejects"))?;
    Ok(())
}

/// Sets the run's final state and report.
pub async fn finish_run(
    client: &impl GenericClient,
    run_id: &str,
    state: &str,
    report: &str,
) -> Result<()> {
    client
        .execute(sql::FINISH_RUN, &[&run_id, &state, &report])
        .await
        .map_err(LedgerError::db("cannot record the run's end"))?;
    Ok(())
}

/// A reject as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RejectRecord {
    /// The shard.
    pub shard_id: String,
    /// The line.
    pub line_no: u64,
    /// Why.
    pub reason: String,
}

/// The first 10 rejects of a run.
pub async fn get_rejects(client: &impl GenericClient, run_id: &str) -> Result<Vec<RejectRecord>> {
    let rows = client
        .query(sql::SELECT_REJECTS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read rejects"))?;
    Ok(rows
        .iter()
        .map(|r| RejectRecord {
            shard_id: r.get(0),
            line_no: r.get::<_, i64>(1) as u64,
            reason: r.get(2),
        })
        .collect())
}

/// A reject to record.
#[derive(Clone, Copy, Debug)]
pub struct RejectRow<'a> {
    /// 1-based physical line number.
    pub line_no: u64,
    /// Why.
    pub reason: &'a str,
    /// The line as read.
    pub raw: &'a [u8],
}

/// Records rejects idempotently (a retried chunk writes the same rows again), in multi-row
/// statements.
pub async fn insert_rejects(
    client: &impl GenericClient,
    run_id: &str,
    shard_id: &str,
    generation: i64,
    rejects: &[RejectRow<'_>],
) -> Result<(), tokio_postgres::Error> {
    const PER_STATEMENT: usize = 200;
    for batch in rejects.chunks(PER_STATEMENT) {
        let line_numbers: Vec<i64> = batch.iter().map(|r| r.line_no as i64).collect();
        let mut statement = String::from(sql::REJECT_INSERT_HEAD);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            Vec::with_capacity(batch.len() * 6);
        for (i, reject) in batch.iter().enumerate() {
            if i > 0 {
                statement.push_str(", ");
            }
            statement.push_str(&sql::reject_values(params.len()));
            params.push(&run_id);
            params.push(&shard_id);
            params.push(&line_numbers[i]);
            params.push(&reject.reason);
            params.push(&reject.raw);
            params.push(&generation);
        }
        statement.push_str(sql::REJECT_INSERT_TAIL);
        client.execute(statement.as_str(), &params).await?;
    }
    Ok(())
}

/// A post-load step as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// Its position among the run's steps.
    pub step_no: i64,
    /// What it does.
    pub description: String,
    /// `started` or `done`.
    pub state: String,
    /// How long it took, once done.
    pub millis: Option<i64>,
    /// What it reported.
    pub note: Option<String>,
}

/// A run's post-load steps as recorded.
pub async fn get_steps(client: &impl GenericClient, run_id: &str) -> Result<Vec<StepRecord>> {
    let rows = client
        .query(sql::SELECT_STEPS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run's post-load steps"))?;
    Ok(rows
        .iter()
        .map(|r| StepRecord {
            step_no: r.get(0),
            description: r.get(1),
            state: r.get(2),
            millis: r.get(3),
            note: r.get(4),
        })
        .collect())
}

/// Marks a post-load step started.
pub async fn start_step(
    client: &impl GenericClient,
    run_id: &str,
    step_no: i64,
    description: &str,
) -> Result<()> {
    client
        .execute(sql::START_STEP, &[&run_id, &step_no, &description])
        .await
        .map_err(LedgerError::db("cannot record a post-load step"))?;
    Ok(())
}

/// Marks a post-load step done.
pub async fn finish_step(
    client: &impl GenericClient,
    run_id: &str,
    step_no: i64,
    millis: i64,
    note: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(sql::FINISH_STEP, &[&run_id, &step_no, &millis, &note])
        .await
        .map(|_| ())
}

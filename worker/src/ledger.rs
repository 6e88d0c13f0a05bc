//! Reading and writing the `ferry` ledger (schema and SQL in [`ferry_shared::ledger`]) through
//! tokio-postgres, and connecting to the target.

use ferry_shared::ledger as sql;
use ferry_shared::manifest::DataFile;
use ferry_shared::schema::TableSchema;
use serde::Serialize;
use tokio_postgres::{Client, GenericClient, NoTls, Row};

use crate::{Result, WorkerError};

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
        .map_err(|e| WorkerError::Ledger(format!("run schema does not parse: {e}")))?;
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
    })
}

fn shard_of(row: &Row) -> ShardRecord {
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
    }
}

/// Connects to the target and drives the connection on a background task.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(WorkerError::db("cannot connect to the target"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "target connection closed");
        }
    });
    Ok(client)
}

/// Creates the ledger schema when missing.
pub async fn ensure_ledger(client: &Client) -> Result<()> {
    for statement in sql::CREATE_LEDGER {
        client
            .batch_execute(statement)
            .await
            .map_err(WorkerError::db("cannot create the ferry ledger"))?;
    }
    Ok(())
}

/// The run, if the ledger has it.
pub async fn get_run(client: &impl GenericClient, run_id: &str) -> Result<Option<RunRecord>> {
    let row = client
        .query_opt(sql::SELECT_RUN, &[&run_id])
        .await
        .map_err(WorkerError::db("cannot read the run"))?;
    row.as_ref().map(run_of).transpose()
}

/// Records a new run and its shards in one transaction (a run already there is left as it is).
pub async fn insert_run(client: &mut Client, run: &RunRecord, files: &[DataFile]) -> Result<()> {
    let schema_json =
        serde_json::to_string(&run.schema).map_err(|e| WorkerError::Internal(e.to_string()))?;
    let tx = client
        .transaction()
        .await
        .map_err(WorkerError::db("cannot start the plan transaction"))?;
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
        ],
    )
    .await
    .map_err(WorkerError::db("cannot record the run"))?;
    let insert = tx
        .prepare(sql::INSERT_SHARD)
        .await
        .map_err(WorkerError::db("cannot prepare shard insert"))?;
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
        .map_err(WorkerError::db("cannot record a shard"))?;
    }
    tx.commit()
        .await
        .map_err(WorkerError::db("cannot commit the plan"))
}

/// Every shard of a run, by shard id.
pub async fn get_shards(client: &impl GenericClient, run_id: &str) -> Result<Vec<ShardRecord>> {
    let rows = client
        .query(sql::SELECT_SHARDS, &[&run_id])
        .await
        .map_err(WorkerError::db("cannot read shards"))?;
    Ok(rows.iter().map(shard_of).collect())
}

/// One shard.
pub async fn get_shard(
    client: &impl GenericClient,
    run_id: &str,
    shard_id: &str,
) -> Result<Option<ShardRecord>> {
    let row = client
        .query_opt(sql::SELECT_SHARD, &[&run_id, &shard_id])
        .await
        .map_err(WorkerError::db("cannot read a shard"))?;
    Ok(row.as_ref().map(shard_of))
}

/// Marks a shard failed with a reason.
pub async fn fail_shard(
    client: &impl GenericClient,
    run_id: &str,
    shard_id: &str,
    reason: &str,
    md5_ok: Option<bool>,
    items_seen: Option<u64>,
) -> Result<()> {
    client
        .execute(
            sql::FAIL_SHARD,
            &[
                &run_id,
                &shard_id,
                &reason,
                &md5_ok,
                &items_seen.map(|n| n as i64),
            ],
        )
        .await
        .map_err(WorkerError::db("cannot record a shard failure"))?;
    Ok(())
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
        .map_err(WorkerError::db("cannot update max_rejects"))?;
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
        .map_err(WorkerError::db("cannot record the run's end"))?;
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
        .map_err(WorkerError::db("cannot read rejects"))?;
    Ok(rows
        .iter()
        .map(|r| RejectRecord {
            shard_id: r.get(0),
            line_no: r.get::<_, i64>(1) as u64,
            reason: r.get(2),
        })
        .collect())
}

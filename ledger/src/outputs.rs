//! The output sets a run owns (`docs/design.md` §6): a Parquet dataset's location and settings
//! (`ferry.outputs`), each file a chunk committed (`ferry.output_files`), which of a run's loads
//! are current, and the runs that share one location (`--append`), so a run's `finalize` lists
//! every run's files and removes only its own stale ones. Recording and forgetting a file are the
//! [`crate::Ledger`]'s (a sink writes them), reading them back is here.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;

use crate::runs::get_shards;
use crate::sql;
use crate::{LedgerError, Result};

/// A run's output as recorded at plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    /// What it is (`parquet`).
    pub kind: String,
    /// Where (a folder or S3 URL).
    pub location: String,
    /// Its settings, as the writer serialized them.
    pub spec_json: String,
}

/// Records a run's output (the first plan of a run wins).
pub async fn record_output(client: &Client, run_id: &str, output: &OutputRecord) -> Result<()> {
    client
        .execute(
            sql::INSERT_OUTPUT,
            &[&run_id, &output.kind, &output.location, &output.spec_json],
        )
        .await
        .map_err(LedgerError::db("cannot record the run's output"))?;
    Ok(())
}

/// A run's output, if it has one.
pub async fn recorded_output(client: &Client, run_id: &str) -> Result<Option<OutputRecord>> {
    let row = client
        .query_opt(sql::SELECT_OUTPUT, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run's output"))?;
    Ok(row.map(|row| OutputRecord {
        kind: row.get(0),
        location: row.get(1),
        spec_json: row.get(2),
    }))
}

/// A committed file, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// The load that wrote it.
    pub load_id: i64,
    /// Its chunk.
    pub chunk: u64,
    /// Its key under the output location.
    pub key: String,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Every file a run recorded, per table (its current and its stale loads' alike).
pub async fn output_files(client: &Client, run_id: &str) -> Result<Vec<(String, FileRecord)>> {
    let rows = client
        .query(sql::SELECT_OUTPUT_FILES, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run's Parquet files"))?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get(0),
                FileRecord {
                    load_id: row.get(1),
                    chunk: row.get::<_, i64>(2).max(0) as u64,
                    key: row.get(3),
                    rows: row.get::<_, i64>(4).max(0) as u64,
                    bytes: row.get::<_, i64>(5).max(0) as u64,
                },
            )
        })
        .collect())
}

/// Every load a run claimed (its shards' generations, current and ended).
pub async fn run_loads(client: &Client, run_id: &str) -> Result<Vec<i64>> {
    let rows = client
        .query(sql::SELECT_RUN_LOADS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run's loads"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The loads of a run's shards' current generations: what its output holds once the files of
/// ended generations are gone.
pub async fn current_loads(client: &Client, run_id: &str) -> Result<HashSet<i64>> {
    let generations: HashMap<String, i64> = get_shards(client, run_id)
        .await?
        .into_iter()
        .map(|s| (s.shard_id, s.generation))
        .collect();
    let loads = client
        .query(sql::SELECT_RUN_LOADS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run's loads"))?;
    Ok(loads
        .iter()
        .filter(|row| generations.get(&row.get::<_, String>(1)) == Some(&row.get::<_, i64>(2)))
        .map(|row| row.get(0))
        .collect())
}

/// The runs whose output is `location` (a run and every `--append` beside it), with their
/// states, by run id.
pub async fn runs_at(client: &Client, location: &str) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(sql::SELECT_RUNS_AT_OUTPUT, &[&location])
        .await
        .map_err(LedgerError::db(
            "cannot read the runs sharing a parquet location",
        ))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

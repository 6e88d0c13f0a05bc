//! Chunk digests and deep verifications (SQL in [`crate::sql::digests`]): what each chunk wrote,
//! as a count and a sum of item hashes, recorded with its checkpoint; and the result of the last
//! deep verification of each table. Computing digests is the worker's (`ferry_worker::normal`),
//! comparing them the coordinator's (`ferry_coordinator::deep`).

use std::collections::HashMap;

use tokio_postgres::GenericClient;

use crate::sql::digests as sql;
use crate::{LedgerError, Result};

/// One table's part of one chunk, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkDigest {
    /// The table.
    pub table: String,
    /// The chunk's provenance (its load and index).
    pub provenance: i64,
    /// The load that wrote it.
    pub load_id: i64,
    /// Items.
    pub items: u64,
    /// The sum of their hashes, 64 hex digits.
    pub digest: String,
}

/// A table's last deep verification.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verification {
    /// The table.
    pub table: String,
    /// `verified`, `differs` or `unverifiable`.
    pub state: String,
    /// The share of chunks compared, per mille (1000: all).
    pub sample_per_mille: i64,
    /// Rows read.
    pub rows_read: i64,
    /// Chunks compared.
    pub chunks: i64,
    /// Of those, how many differ.
    pub chunks_differing: i64,
    /// What differs, in words.
    pub detail: String,
}

/// Records `digests` (idempotently, in one statement per 100).
pub async fn record(
    client: &impl GenericClient,
    run_id: &str,
    digests: &[ChunkDigest],
) -> std::result::Result<(), tokio_postgres::Error> {
    for batch in digests.chunks(100) {
        let items: Vec<i64> = batch.iter().map(|d| d.items as i64).collect();
        let mut statement = String::from(sql::DIGEST_INSERT_HEAD);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            Vec::with_capacity(batch.len() * 6);
        for (i, digest) in batch.iter().enumerate() {
            if i > 0 {
                statement.push_str(", ");
            }
            statement.push_str(&sql::digest_values(params.len()));
            params.push(&run_id);
            params.push(&digest.table);
            params.push(&digest.provenance);
            params.push(&digest.load_id);
            params.push(&items[i]);
            params.push(&digest.digest);
        }
        statement.push_str(sql::DIGEST_INSERT_TAIL);
        client.execute(statement.as_str(), &params).await?;
    }
    Ok(())
}

/// Every digest `run_id` recorded (of every load, current or ended).
pub async fn run_digests(client: &impl GenericClient, run_id: &str) -> Result<Vec<ChunkDigest>> {
    let rows = client
        .query(sql::SELECT_RUN_DIGESTS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run's chunk digests"))?;
    Ok(rows
        .iter()
        .map(|row| ChunkDigest {
            table: row.get(0),
            provenance: row.get(1),
            load_id: row.get(2),
            items: row.get::<_, i64>(3) as u64,
            digest: row.get(4),
        })
        .collect())
}

/// Every load id in the ledger and the run that claimed it.
pub async fn load_runs(client: &impl GenericClient) -> Result<HashMap<i64, String>> {
    let rows = client
        .query(sql::SELECT_LOAD_RUNS, &[])
        .await
        .map_err(LedgerError::db("cannot read the loads"))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Records a table's verification.
pub async fn record_verification(
    client: &impl GenericClient,
    run_id: &str,
    v: &Verification,
) -> Result<()> {
    client
        .execute(
            sql::UPSERT_VERIFICATION,
            &[
                &run_id,
                &v.table,
                &v.state,
                &v.sample_per_mille,
                &v.rows_read,
                &v.chunks,
                &v.chunks_differing,
                &v.detail,
            ],
        )
        .await
        .map_err(LedgerError::db("cannot record a verification"))?;
    Ok(())
}

/// A run's verifications, by table.
pub async fn verifications(client: &impl GenericClient, run_id: &str) -> Result<Vec<Verification>> {
    let rows = client
        .query(sql::SELECT_VERIFICATIONS, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read the run's verifications"))?;
    Ok(rows
        .iter()
        .map(|row| Verification {
            table: row.get(0),
            state: row.get(1),
            sample_per_mille: row.get(2),
            rows_read: row.get(3),
            chunks: row.get(4),
            chunks_differing: row.get(5),
            detail: row.get(6),
        })
        .collect())
}

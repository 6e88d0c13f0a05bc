//! What the SQL sinks share: the [`Ledger`] on a tokio-postgres client, the presence probe of a
//! table's key with its provenance, and the chunk checkpoint (rejects, then the conditional
//! `committed_lines` update), written on whatever connection state the sink is in (its chunk
//! transaction, or autocommit).

use async_trait::async_trait;
use ferry_shared::failpoint;
use ferry_shared::ident::quote_ident;
use ferry_shared::ledger as sql;
use ferry_shared::schema::{PgType, TableSchema, PROVENANCE_COLUMN};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::{Checkpoint, KeyValue, Ledger, Presence, Unload};
use crate::ledger::{self, LoadClaim, RejectRow, Restart, ShardRecord};
use crate::{Result, WorkerError};

/// `SELECT _ferry_chunk FROM t WHERE k1 = $1 AND …`: text parameters cast in SQL (HeliosDB
/// decodes binary NUMERIC parameters badly), bytea bound as bytes.
pub fn probe_sql(table: &TableSchema) -> String {
    let conditions: Vec<String> = table
        .key_columns()
        .enumerate()
        .map(|(i, c)| {
            let parameter = match c.pg_type {
                PgType::Numeric | PgType::NumericScaled { .. } => {
                    format!("CAST(${}::text AS NUMERIC)", i + 1)
                }
                PgType::Bytea => format!("${}::bytea", i + 1),
                _ => format!("${}::text", i + 1),
            };
            format!("{} = {parameter}", quote_ident(&c.name))
        })
        .collect();
    format!(
        "SELECT {}::int8 FROM {} WHERE {} LIMIT 1",
        quote_ident(PROVENANCE_COLUMN),
        quote_ident(&table.table),
        conditions.join(" AND ")
    )
}

/// Runs a [`probe_sql`] statement for `key`.
pub async fn probe(
    client: &Client,
    statement: &str,
    key: &[KeyValue],
    provenance: i64,
) -> Result<Presence> {
    let params: Vec<&(dyn ToSql + Sync)> = key
        .iter()
        .map(|k| match k {
            KeyValue::Text(t) => t as &(dyn ToSql + Sync),
            KeyValue::Bytes(b) => b as &(dyn ToSql + Sync),
        })
        .collect();
    let rows = client
        .query(statement, &params)
        .await
        .map_err(WorkerError::db("cannot look up a chunk's key"))?;
    Ok(match rows.first() {
        None => Presence::Absent,
        Some(row) => match row.get::<_, Option<i64>>(0) {
            Some(found) if found == provenance => Presence::Ours,
            other => Presence::Other(other),
        },
    })
}

/// Whether a database error is a unique-key violation (PostgreSQL's 23505, or a server that
/// reports it only in words).
pub fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return true;
    }
    error.as_db_error().is_some_and(|db| {
        let text = db.message().to_ascii_lowercase();
        text.contains("duplicate key") || text.contains("unique constraint")
    })
}

/// Records the chunk's rejects and moves the checkpoint, on `client` in whatever transaction
/// state it is; `false` when the checkpoint had moved or the generation changed. Hits the
/// `after_checkpoint` failpoint after the move.
pub async fn write_checkpoint(client: &Client, checkpoint: &Checkpoint<'_>) -> Result<bool> {
    let Checkpoint {
        run_id,
        shard_id,
        generation,
        from,
        to,
        rows,
        spilled,
        filtered,
        rejects,
        file_end,
    } = checkpoint;
    if !rejects.is_empty() {
        // What the ledger keeps of each line and reason (load.reject_lines).
        let mode = crate::redact::mode();
        let kept: Vec<_> = rejects
            .iter()
            .map(|r| {
                let reason = crate::redact::reason(&r.reason, r.kind.label(), mode);
                (r.line_no, reason, crate::redact::line(&r.raw, mode))
            })
            .collect();
        let rows: Vec<RejectRow<'_>> = kept
            .iter()
            .map(|(line_no, reason, raw)| RejectRow {
                line_no: *line_no,
                reason,
                raw,
            })
            .collect();
        ledger::insert_rejects(client, run_id, shard_id, *generation, &rows)
            .await
            .map_err(WorkerError::db("cannot record rejects"))?;
    }
    let (from, to, rows, rejected, spilled, filtered) = (
        *from as i64,
        *to as i64,
        *rows as i64,
        rejects.len() as i64,
        *spilled as i64,
        *filtered as i64,
    );
    let updated = match file_end {
        None => client
            .execute(
                sql::ADVANCE_CHECKPOINT,
                &[
                    run_id, shard_id, &from, &to, &rows, &rejected, &spilled, &filtered, generation,
                ],
            )
            .await
            .map_err(WorkerError::db("cannot advance the checkpoint"))?,
        Some(end) => client
            .execute(
                sql::FINISH_SHARD,
                &[
                    run_id,
                    shard_id,
                    &from,
                    &(end.physical_lines as i64),
                    &rows,
                    &rejected,
                    &spilled,
                    &(end.items as i64),
                    &end.md5_ok,
                    &filtered,
                    generation,
                ],
            )
            .await
            .map_err(WorkerError::db("cannot finish the shard"))?,
    };
    if updated != 1 {
        return Ok(false);
    }
    failpoint::hit("after_checkpoint")?;
    Ok(true)
}

/// A database table's rows of an ended load: removed by their provenance.
#[async_trait]
impl Unload for Client {
    async fn remove_rows(&self, table: &TableSchema, load_id: i64) -> Result<u64> {
        let (lo, hi) = ferry_shared::schema::provenance_range(load_id);
        let statement = format!(
            "DELETE FROM {} WHERE {column} >= $1::int8 AND {column} < $2::int8",
            quote_ident(&table.table),
            column = quote_ident(PROVENANCE_COLUMN)
        );
        self.execute(statement.as_str(), &[&lo, &hi])
            .await
            .map_err(|source| WorkerError::Db {
                context: format!("cannot remove a load's rows from table {:?}", table.table),
                source,
            })
    }
}

#[async_trait]
impl Ledger for Client {
    async fn shard(&self, run_id: &str, shard_id: &str) -> Result<Option<ShardRecord>> {
        ledger::get_shard(self, run_id, shard_id).await
    }

    async fn fail_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        reason: &str,
        md5_ok: Option<bool>,
        items_seen: Option<u64>,
    ) -> Result<()> {
        ledger::fail_shard(self, run_id, shard_id, reason, md5_ok, items_seen).await
    }

    async fn restart_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
        restart: &Restart,
    ) -> Result<bool> {
        ledger::restart_shard(self, run_id, shard_id, generation, restart).await
    }

    async fn recorded_load(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
    ) -> Result<Option<LoadClaim>> {
        ledger::recorded_load(self, run_id, shard_id, generation).await
    }

    async fn claim_load(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
        file_identity: &str,
    ) -> Result<LoadClaim> {
        ledger::claim_load(self, run_id, shard_id, generation, file_identity).await
    }

    async fn stale_loads(&self, run_id: &str, shard_id: &str, generation: i64) -> Result<Vec<i64>> {
        ledger::stale_loads(self, run_id, shard_id, generation).await
    }

    async fn mark_load_cleaned(&self, load_id: i64) -> Result<()> {
        ledger::mark_load_cleaned(self, load_id).await
    }

    async fn mark_copying(
        &self,
        run_id: &str,
        shard_id: &str,
        from: u64,
        generation: i64,
    ) -> Result<bool> {
        ledger::mark_copying(self, run_id, shard_id, from, generation).await
    }

    async fn delete_stale_rejects(
        &self,
        run_id: &str,
        shard_id: &str,
        generation: i64,
    ) -> Result<u64> {
        ledger::delete_stale_rejects(self, run_id, shard_id, generation).await
    }

    async fn load_owner(&self, load_id: i64) -> Result<Option<(String, String, String)>> {
        ledger::load_owner(self, load_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::schema::{ColumnSpec, DdbType};

    #[test]
    fn probes_bind_keys_as_text_or_bytes() {
        let column = |name: &str, pg_type| ColumnSpec {
            name: name.into(),
            ddb_type: DdbType::S,
            pg_type,
            is_key: true,
        };
        let table = TableSchema {
            table: "T\"x".into(),
            columns: vec![
                column("pk", PgType::Text),
                column("n", PgType::Numeric),
                column("b", PgType::Bytea),
            ],
            overflow_column: "attrs".into(),
            nested_json: Default::default(),
            on_type_mismatch: Default::default(),
            numeric_limit: Default::default(),
            routing: None,
            provenance: true,
        };
        assert_eq!(
            probe_sql(&table),
            "SELECT \"_ferry_chunk\"::int8 FROM \"T\"\"x\" WHERE \"pk\" = $1::text AND \
             \"n\" = CAST($2::text AS NUMERIC) AND \"b\" = $3::bytea LIMIT 1"
        );
    }
}

//! What the SQL sinks share: removing an ended load's rows ([`Unload`] by provenance), the presence
//! probe of a table's key with its provenance, and the chunk checkpoint (rejects, then the
//! conditional `committed_lines` update, [`Ledger::advance`]), written on
//! whatever connection state the sink is in (its chunk transaction, or autocommit).

use async_trait::async_trait;
use ferry_shared::failpoint;
use ferry_shared::ident::quote_ident;
use ferry_shared::schema::{PgType, TableSchema, PROVENANCE_COLUMN};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::{Checkpoint, KeyValue, Ledger, Presence, Unload};
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

pub use ferry_ledger::error::is_unique_violation;

/// Records the chunk's rejects and moves the checkpoint, on `client` in whatever transaction
/// state it is; `false` when the checkpoint had moved or the generation changed. Hits the
/// `after_checkpoint` failpoint after the move.
pub async fn write_checkpoint(
    ledger: &(impl Ledger + ?Sized),
    checkpoint: &Checkpoint<'_>,
) -> Result<bool> {
    let kept = checkpoint.kept_rejects();
    let moved = ledger.advance(&checkpoint.advance(&kept).get()).await?;
    if moved {
        failpoint::hit("after_checkpoint")?;
    }
    Ok(moved)
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

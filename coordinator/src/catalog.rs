//! What the coordinator reads of the target's catalog, the same way on PostgreSQL and HeliosDB:
//! a table's unique indexes (its PRIMARY KEY, UNIQUE constraints and unique indexes) and its
//! columns' types.

use ferry_worker::target::{Target, TargetKind};
use tokio_postgres::Client;

use crate::{CoordinatorError, Result};

/// The column sets of the table's unique indexes (its PRIMARY KEY and UNIQUE constraints, and
/// `CREATE UNIQUE INDEX`), read from `pg_index`, which both PostgreSQL and HeliosDB have (HeliosDB's
/// `information_schema` leaves unique indexes out).
pub async fn unique_column_sets(
    client: &Client,
    table: &str,
    target: &Target,
) -> Result<Vec<Vec<String>>> {
    // PostgreSQL: this schema's table, and no partial or expression index (HeliosDB has one
    // schema and neither kind).
    let (in_schema, plain) = match target.kind {
        TargetKind::Postgres => (
            " AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
            " AND i.indpred IS NULL AND i.indexprs IS NULL",
        ),
        TargetKind::HeliosDb => ("", ""),
    };
    let indexes = client
        .query(
            &format!(
                "SELECT i.indkey::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                 WHERE c.relname = $1::text AND i.indisunique{in_schema}{plain}"
            ),
            &[&table],
        )
        .await
        .map_err(CoordinatorError::db(
            "cannot read the table's unique indexes",
        ))?;
    let attributes = client
        .query(
            &format!(
                "SELECT a.attnum::int8, a.attname::text FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 WHERE c.relname = $1::text AND a.attnum > 0{in_schema}"
            ),
            &[&table],
        )
        .await
        .map_err(CoordinatorError::db("cannot read the table's columns"))?;
    let name_of = |number: i64| {
        attributes
            .iter()
            .find(|r| r.get::<_, i64>(0) == number)
            .map(|r| r.get::<_, String>(1))
    };
    Ok(indexes
        .iter()
        .map(|row| {
            let key: String = row.get(0);
            key.split_whitespace()
                .map(|n| n.parse::<i64>().ok().and_then(name_of).unwrap_or_default())
                .collect()
        })
        .collect())
}

/// A column's type name as `information_schema.columns.udt_name` reports it (`int4`, `text`, …),
/// or `None` when the table has no such column.
pub async fn column_udt(client: &Client, table: &str, column: &str) -> Result<Option<String>> {
    let rows = client
        .query(
            "SELECT udt_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1::text AND column_name = $2::text",
            &[&table, &column],
        )
        .await
        .map_err(CoordinatorError::db("cannot read a column's type"))?;
    Ok(rows.first().map(|r| r.get(0)))
}

/// The SQL type to cast a text parameter to for a column of `udt` (`CAST($1::text AS …)`).
pub fn cast_type(udt: &str) -> String {
    match udt {
        "bool" => "BOOLEAN".into(),
        "_text" => "TEXT[]".into(),
        "_numeric" => "NUMERIC[]".into(),
        other => other.to_ascii_uppercase(),
    }
}

//! What the coordinator reads of the target's catalog, the same way on PostgreSQL and HeliosDB:
//! a table's unique indexes (its PRIMARY KEY, UNIQUE constraints and unique indexes) and its
//! columns' types.
//!
//! HeliosDB 4.41 lists a non-ASCII identifier in its catalog as its UTF-8 bytes read as Latin-1
//! (a column created as `"ünïcode näme"` is listed as `Ã¼nÃ¯code nÃ¤me`), while every statement
//! that quotes the real name reaches it. So names looked up in its catalog go through
//! [`to_catalog`] and names read from it through [`from_catalog`]; on PostgreSQL both are the
//! identity. (A result's column names are mangled the same way: `ferry_shared::ident::same_column_name`.) (Found by the command-sequence test: a resumed run of a table with such a column was
//! refused as "column … is missing".)

use ferry_worker::target::{Target, TargetKind};
use tokio_postgres::Client;

use crate::{CoordinatorError, Result};

/// `name` as HeliosDB's catalog holds it: its UTF-8 bytes, each read as one Latin-1 character.
pub fn to_catalog(kind: TargetKind, name: &str) -> String {
    match kind {
        TargetKind::HeliosDb => ferry_shared::ident::latin1_of_utf8(name),
        TargetKind::Postgres => name.to_string(),
    }
}

/// A name read from HeliosDB's catalog as the statements name it: characters that are all Latin-1
/// are taken back as the UTF-8 bytes they were, when those bytes are UTF-8 (what [`to_catalog`]
/// made); any other name as it is.
pub fn from_catalog(kind: TargetKind, name: String) -> String {
    if kind == TargetKind::Postgres || name.is_ascii() {
        return name;
    }
    let bytes: Option<Vec<u8>> = name.chars().map(|c| u8::try_from(c).ok()).collect();
    match bytes.map(String::from_utf8) {
        Some(Ok(real)) => real,
        _ => name,
    }
}

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
            &[&to_catalog(target.kind, table)],
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
            &[&to_catalog(target.kind, table)],
        )
        .await
        .map_err(CoordinatorError::db("cannot read the table's columns"))?;
    let name_of = |number: i64| {
        attributes
            .iter()
            .find(|r| r.get::<_, i64>(0) == number)
            .map(|r| from_catalog(target.kind, r.get::<_, String>(1)))
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
pub async fn column_udt(
    client: &Client,
    kind: TargetKind,
    table: &str,
    column: &str,
) -> Result<Option<String>> {
    let rows = client
        .query(
            "SELECT udt_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1::text AND column_name = $2::text",
            &[&to_catalog(kind, table), &to_catalog(kind, column)],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heliosdb_catalog_names_go_both_ways() {
        let kind = TargetKind::HeliosDb;
        // As HeliosDB 4.41 lists them (bytes C3 BC … read as Latin-1; 0x82 of "€" too).
        assert_eq!(to_catalog(kind, "ünïcode näme"), "Ã¼nÃ¯code nÃ¤me");
        assert_eq!(to_catalog(kind, "€x"), "\u{e2}\u{82}\u{ac}x");
        for name in ["ünïcode näme", "€x", "plain", "日本"] {
            assert_eq!(from_catalog(kind, to_catalog(kind, name)), name);
            assert_eq!(to_catalog(TargetKind::Postgres, name), name);
            assert_eq!(from_catalog(TargetKind::Postgres, name.to_string()), name);
        }
        // A name that is not such a mangling stays as it is.
        assert_eq!(from_catalog(kind, "Ãx".to_string()), "Ãx");
    }
}

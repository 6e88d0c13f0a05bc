//! The applier: a DynamoDB incremental export (one catch-up *window*) applied to the tables a full
//! run loaded, as one more sink behind the chunk driver.
//!
//! # What a change record does
//! - With a `NewImage`, the item is converted exactly as the full run converted items (the run's
//!   recorded schema and routing: [`crate::decode::Decoder`] in table mode,
//!   [`crate::route::Router`] in routed mode, the same casts, overflow and rest columns,
//!   transforms and filters), and its row is upserted
//!   (`INSERT … ON CONFLICT (key) DO UPDATE` of every column the run writes). In a routed run the
//!   key is also deleted from the run's other tables, so an item whose update changed the rule it
//!   matches leaves its old table (skipped when every rule matches on the key alone: such items
//!   cannot move). A `NewImage` that a filter skips or that is rejected deletes the key: the table
//!   then holds what a full load of the new state would hold (no row, plus the reject).
//! - Without a `NewImage`, the key is deleted from every table it can be in.
//!
//! # Exactly once
//! A chunk's deletes, upserts, rejects, deferrals and its conditional checkpoint are **one
//! transaction**, on PostgreSQL and on HeliosDB alike (HeliosDB has no COPY fast path to lose here:
//! upserts are `INSERT … VALUES` either way). On HeliosDB 4.41 that holds only for statements with
//! literal values: its `ON CONFLICT DO UPDATE` with `$n` parameters wrote a conflicting row outside
//! the transaction, so a chunk rolled back (a crash, a lost race after the upserts, a refused
//! statement) kept its updates. Every HeliosDB statement of the applier is therefore literal (see
//! below), and `applied_statements_are_exact_on_heliosdb` (`tests/tests/catch_up.rs`) applies a
//! chunk, rolls it back and requires every row as it was. The checkpoint is the transaction's first write, so
//! a second loader of the same chunk finds it moved (PostgreSQL), or is refused by HeliosDB's
//! first-committer-wins conflict on the shard's row, and rolls back: a lost race. A crash before
//! COMMIT leaves nothing of the chunk. So every chunk of every file commits exactly once.
//!
//! Replays cannot reorder history: a window's shards load only once the window before it is
//! complete ([`crate::window`], checked when a loader opens a shard, and by the coordinator before
//! it submits), and DynamoDB writes each key at most once per window. A stale loader of an earlier
//! window cannot commit after its chunk's checkpoint moved, so no upsert is applied over a newer
//! image and no deleted row comes back. Re-applying a window's lines over a partly applied window
//! is harmless (each line sets its key to the window's final state), which is why a file of a
//! window that fails its checks is loaded again from the start without removing anything
//! ([`KeepWindowRows`]).
//!
//! # Constraints other than the key
//! Inside a valid window a unique value can move from one item to another (the guide's
//! `users.email`), a child can arrive before its parent, a parent can be deleted before its
//! children. Applied file by file in any order, such a change can violate a constraint for a
//! moment. So deletes run before upserts; a statement refused for a constraint (SQLSTATE class
//! 23, or a data error of class 22) is retried row by row (in rounds, while any row succeeds,
//! under savepoints); and a line that still fails is *deferred*: recorded in `ferry.deferred`
//! with the chunk, and retried when every file of the window is in ([`crate::window`]). What still
//! fails then (a true cycle, such as two users swapping emails) becomes a reject naming the
//! constraint.
//!
//! # On HeliosDB: literal values, one search-tree delete
//! HeliosDB 4.41 gets `INSERT … ON CONFLICT DO UPDATE` wrong with `$n` parameters: a conflicting
//! row is updated in committed storage, outside the transaction (a `ROLLBACK` keeps the new value,
//! other sessions see it before `COMMIT`), and the statement clones its parameters once per
//! conflicting row, so it slows down as it grows. With literal values (over the simple protocol)
//! the same statement runs inside the transaction, about five times faster. So on HeliosDB every
//! upsert and delete is rendered with literals by [`super::literal`] (the one encoder; its docs
//! say how a value is written and why) and sent under a savepoint over the simple protocol;
//! PostgreSQL keeps its parameters.
//!
//! A `DELETE` on HeliosDB scans the whole table whatever its predicate (a composite key, or any
//! key once the transaction wrote the table), and compares an `IN` list element by element. So a
//! chunk's deletes of a table are one statement per [`HELIOS_TREE_KEYS`] keys whose predicate is
//! a search tree: keys sorted by their first column (text, compared byte-wise as HeliosDB and Rust
//! both do), split into ranges four ways per level, `("k1" >= lo AND "k1" < hi AND (…))`, with
//! leaves of up to eight `("k1" = v AND "k2" IN (…))`; HeliosDB evaluates `AND`/`OR` lazily, so a
//! row costs O(log n) comparisons instead of O(n). Every leaf is an exact equality on the whole
//! key, so the predicate matches no row but the listed keys; the ranges only prune (a row outside
//! its range is one the leaves below would not match either, the keys being sorted in the order
//! the server compares them). A table whose first key column is not text, with a binary key
//! column or more than two key columns, keeps the earlier batched form: 500 keys per statement
//! matched on the whole key as one text value. PostgreSQL deletes through its index:
//! `(k1, k2) IN (SELECT … FROM unnest($1::text[], $2::text[]))`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ferry_shared::ident::quote_ident;
use ferry_shared::schema::{PgType, TableSchema, PROVENANCE_COLUMN};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

pub use super::encode::{parse_change_line, ChangeEncoder, Changes, Delete, Upsert};
use super::literal::{push_literal, LiteralError};
use super::sql::write_checkpoint;
use super::Key;
use super::{Checkpoint, KeyValue, Payload, Presence, Sink, TableEnd, TableRows, Unload};
use crate::target::TargetKind;
use crate::{Result, WorkerError};
pub use ferry_ledger::window::Deferral;

/// Whether an error means another loader committed first (the chunk is retried later).
pub fn is_lost_race(error: &tokio_postgres::Error) -> bool {
    if error.code() == Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE) {
        return true;
    }
    error.as_db_error().is_some_and(|db| {
        db.message()
            .to_ascii_lowercase()
            .contains("serialization failure")
    })
}

/// Whether a statement was refused for its data (a constraint, SQLSTATE class 23, or a value the
/// column refuses, class 22): the row waits for the end of the window.
pub fn is_deferrable(error: &tokio_postgres::Error) -> bool {
    if is_lost_race(error) {
        return false;
    }
    if let Some(code) = error.code() {
        if code.code().starts_with("23") || code.code().starts_with("22") {
            return true;
        }
    }
    error.as_db_error().is_some_and(|db| {
        let text = db.message().to_ascii_lowercase();
        // HeliosDB reports a value its column refuses as XX000 "Cannot cast '…' to INT4" (on
        // PostgreSQL "cannot cast" is a statement's type error, 42846, never a row's).
        let refused_value = db.code() == &tokio_postgres::error::SqlState::INTERNAL_ERROR
            && text.contains("cannot cast");
        text.contains("constraint")
            || text.contains("duplicate key")
            || text.contains("violates")
            || refused_value
    })
}

fn lost_race_of(error: &WorkerError) -> bool {
    matches!(error, WorkerError::Db { source, .. } if is_lost_race(source))
}

/// The SQL of one table.
#[derive(Debug)]
pub struct TableSql {
    table: TableSchema,
    heliosdb: bool,
    /// `INSERT INTO t (…) VALUES `
    insert_head: String,
    /// ` ON CONFLICT (keys) DO UPDATE SET …`
    upsert_tail: String,
    /// Every column's SQL type, in value order.
    types: Vec<PgType>,
    /// Rows per upsert statement.
    rows_per_statement: usize,
}

/// Separates the key columns' text in a HeliosDB batched delete.
const KEY_SEPARATOR: char = '\u{1f}';
/// Keys per batched HeliosDB delete statement (tables the search tree does not serve).
const HELIOS_DELETE_BATCH: usize = 500;
/// Keys per HeliosDB search-tree delete statement (each statement scans the table once).
pub const HELIOS_TREE_KEYS: usize = 5_000;
/// Branches per level of the search tree (deeper nesting reaches the SQL parser's recursion limit).
const TREE_FANOUT: usize = 4;
/// First-column groups per leaf of the search tree.
const TREE_LEAF: usize = 8;
/// Keys per PostgreSQL delete statement.
const PG_DELETE_BATCH: usize = 10_000;

impl TableSql {
    /// The statements for `table` on PostgreSQL or HeliosDB.
    pub fn new(table: &TableSchema, heliosdb: bool) -> TableSql {
        let types = crate::csv::row_types(table);
        let mut updates: Vec<String> = table
            .columns
            .iter()
            .filter(|c| !c.is_key)
            .map(|c| quote_ident(&c.name))
            .collect();
        updates.push(quote_ident(&table.overflow_column));
        if table.provenance {
            updates.push(quote_ident(PROVENANCE_COLUMN));
        }
        let keys: Vec<String> = table.key_columns().map(|c| quote_ident(&c.name)).collect();
        TableSql {
            insert_head: format!(
                "INSERT INTO {} ({}) VALUES ",
                quote_ident(&table.table),
                table.copy_column_list()
            ),
            upsert_tail: format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                keys.join(", "),
                updates
                    .iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            rows_per_statement: (60_000 / types.len().max(1)).clamp(1, 500),
            types,
            table: table.clone(),
            heliosdb,
        }
    }

    /// `INSERT … VALUES (…)×rows ON CONFLICT … DO UPDATE …`, every value a text parameter cast
    /// to its column's type.
    fn upsert_sql(&self, rows: usize) -> String {
        let mut sql = self.insert_head.clone();
        let mut n = 0;
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for (c, pg_type) in self.types.iter().enumerate() {
                n += 1;
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("CAST(${n}::text AS {})", pg_type.sql()));
            }
            sql.push(')');
        }
        sql.push_str(&self.upsert_tail);
        sql
    }

    fn key_columns(&self) -> Vec<&ferry_shared::schema::ColumnSpec> {
        self.table.key_columns().collect()
    }

    /// A key column compared with a text parameter in its own type.
    fn key_condition(column: &ferry_shared::schema::ColumnSpec, n: usize) -> String {
        let parameter = match column.pg_type {
            PgType::Text => format!("${n}::text"),
            PgType::Bytea => format!("decode(${n}::text, 'hex')"),
            other => format!("CAST(${n}::text AS {})", other.sql()),
        };
        format!("{} = {parameter}", quote_ident(&column.name))
    }

    /// `DELETE … WHERE k1 = $1 AND k2 = $2`: one key.
    fn delete_one_sql(&self) -> String {
        let conditions: Vec<String> = self
            .key_columns()
            .iter()
            .enumerate()
            .map(|(i, c)| Self::key_condition(c, i + 1))
            .collect();
        format!(
            "DELETE FROM {} WHERE {}",
            quote_ident(&self.table.table),
            conditions.join(" AND ")
        )
    }

    /// PostgreSQL: every key of a batch through the key's index.
    fn pg_delete_sql(&self) -> String {
        let keys = self.key_columns();
        let names: Vec<String> = keys.iter().map(|c| quote_ident(&c.name)).collect();
        let values: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, c)| match c.pg_type {
                PgType::Text => format!("u.k{i}"),
                PgType::Bytea => format!("decode(u.k{i}, 'hex')"),
                other => format!("CAST(u.k{i} AS {})", other.sql()),
            })
            .collect();
        let arrays: Vec<String> = (1..=keys.len()).map(|i| format!("${i}::text[]")).collect();
        let aliases: Vec<String> = (0..keys.len()).map(|i| format!("k{i}")).collect();
        format!(
            "DELETE FROM {} WHERE ({}) IN (SELECT {} FROM unnest({}) AS u({}))",
            quote_ident(&self.table.table),
            names.join(", "),
            values.join(", "),
            arrays.join(", "),
            aliases.join(", ")
        )
    }

    /// Whether HeliosDB can delete this table's keys in batches (text and numeric key columns).
    fn helios_batchable(&self) -> bool {
        self.key_columns()
            .iter()
            .all(|c| !matches!(c.pg_type, PgType::Bytea | PgType::ByteaArray))
    }

    /// HeliosDB: `keys` keys, bounded by the first key column's range when it is text.
    fn helios_delete_sql(&self, keys: usize) -> String {
        let columns = self.key_columns();
        let first = &columns[0];
        let as_text = |c: &ferry_shared::schema::ColumnSpec| match c.pg_type {
            PgType::Text => quote_ident(&c.name),
            _ => format!("CAST({} AS TEXT)", quote_ident(&c.name)),
        };
        let mut sql = format!("DELETE FROM {} WHERE ", quote_ident(&self.table.table));
        let mut n = 0;
        if first.pg_type == PgType::Text {
            sql.push_str(&format!(
                "{0} >= $1::text AND {0} <= $2::text AND ",
                quote_ident(&first.name)
            ));
            n = 2;
        }
        let whole = if columns.len() == 1 {
            as_text(first)
        } else {
            n += 1;
            let separator = format!(" || ${n}::text || ");
            columns
                .iter()
                .map(|c| as_text(c))
                .collect::<Vec<_>>()
                .join(&separator)
        };
        let list: Vec<String> = (n + 1..=n + keys).map(|i| format!("${i}::text")).collect();
        sql.push_str(&format!("{whole} IN ({})", list.join(", ")));
        sql
    }
}

impl TableSql {
    /// HeliosDB: `INSERT … VALUES (…)×rows ON CONFLICT … DO UPDATE …` with every value a literal
    /// ([`super::literal`]).
    fn helios_upsert_sql(&self, rows: &[&Upsert]) -> std::result::Result<String, LiteralError> {
        let mut sql = self.insert_head.clone();
        for (i, row) in rows.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for (c, value) in row.values.iter().enumerate() {
                if c > 0 {
                    sql.push_str(", ");
                }
                push_literal(&mut sql, value.as_deref())?;
            }
            sql.push(')');
        }
        sql.push_str(&self.upsert_tail);
        Ok(sql)
    }

    /// Whether HeliosDB's deletes of this table take the search tree: a text first key column, at
    /// most two key columns, none binary.
    fn helios_tree(&self) -> bool {
        let keys = self.key_columns();
        keys.len() <= 2
            && keys[0].pg_type == PgType::Text
            && keys
                .iter()
                .all(|c| !matches!(c.pg_type, PgType::Bytea | PgType::ByteaArray))
    }

    /// HeliosDB: `DELETE FROM t WHERE <search tree>` over `keys` (sorted, distinct, text values).
    fn helios_tree_delete_sql(&self, keys: &[&Key]) -> std::result::Result<String, LiteralError> {
        let columns = self.key_columns();
        let first = quote_ident(&columns[0].name);
        let second = columns.get(1).map(|c| match c.pg_type {
            PgType::Text => quote_ident(&c.name),
            _ => format!("CAST({} AS TEXT)", quote_ident(&c.name)),
        });
        // Groups of keys sharing their first column's value: (that value, the second column's).
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for key in keys {
            let head = text_of(&key[0]);
            let tail = key.get(1).map(text_of);
            match groups.last_mut() {
                Some((value, rest)) if *value == head => rest.extend(tail),
                _ => groups.push((head, tail.into_iter().collect())),
            }
        }
        let mut sql = format!("DELETE FROM {} WHERE ", quote_ident(&self.table.table));
        push_tree(&mut sql, &groups, &first, second.as_deref())?;
        Ok(sql)
    }
}

/// The text of a key value the search tree compares (its tables' keys are text; a binary value,
/// which they cannot hold, would be compared as its hex text, never matching).
fn text_of(value: &KeyValue) -> &str {
    match value {
        KeyValue::Text(text) => text,
        KeyValue::Bytes(_) => "",
    }
}

/// Appends the search tree over `groups` (sorted by their first value): ranges of the first key
/// column, [`TREE_FANOUT`] per level, down to leaves of [`TREE_LEAF`] groups, each an exact
/// equality on the whole key.
fn push_tree(
    sql: &mut String,
    groups: &[(&str, Vec<&str>)],
    first: &str,
    second: Option<&str>,
) -> std::result::Result<(), LiteralError> {
    if groups.len() <= TREE_LEAF {
        match second {
            None => {
                // One key column: `"k" IN (…)`.
                sql.push_str(first);
                sql.push_str(" IN (");
                for (i, (value, _)) in groups.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    push_literal(sql, Some(value))?;
                }
                sql.push(')');
            }
            Some(second) => {
                for (i, (value, rest)) in groups.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(" OR ");
                    }
                    sql.push('(');
                    sql.push_str(first);
                    sql.push_str(" = ");
                    push_literal(sql, Some(value))?;
                    sql.push_str(" AND ");
                    sql.push_str(second);
                    sql.push_str(" IN (");
                    for (j, tail) in rest.iter().enumerate() {
                        if j > 0 {
                            sql.push_str(", ");
                        }
                        push_literal(sql, Some(tail))?;
                    }
                    sql.push_str("))");
                }
            }
        }
        return Ok(());
    }
    let size = groups.len().div_ceil(TREE_FANOUT);
    let parts: Vec<&[(&str, Vec<&str>)]> = groups.chunks(size).collect();
    for (j, part) in parts.iter().enumerate() {
        if j > 0 {
            sql.push_str(" OR ");
        }
        sql.push('(');
        if j > 0 {
            sql.push_str(first);
            sql.push_str(" >= ");
            push_literal(sql, Some(part[0].0))?;
            sql.push_str(" AND ");
        }
        if let Some(next) = parts.get(j + 1) {
            sql.push_str(first);
            sql.push_str(" < ");
            push_literal(sql, Some(next[0].0))?;
            sql.push_str(" AND ");
        }
        sql.push('(');
        push_tree(sql, part, first, second)?;
        sql.push_str("))");
    }
    Ok(())
}

/// HeliosDB: `statement` (literal values, the simple protocol) under a savepoint; the rows it
/// changed. On an error other than a lost race, the savepoint is rolled back to (the transaction
/// goes on) and the error returned. (The savepoint and its release go in messages of their own:
/// HeliosDB cuts a message into statements with a scanner that can misread a literal, see
/// [`super::literal`].)
async fn helios_under_savepoint(
    client: &Client,
    statement: &str,
) -> std::result::Result<u64, tokio_postgres::Error> {
    client.batch_execute("SAVEPOINT ferry_apply").await?;
    let result = client
        .simple_query(statement)
        .await
        .map(|replies| rows_changed(&replies));
    finish_savepoint(client, result).await
}

/// The rows a simple-protocol message changed (the sum of its statements' counts).
pub fn rows_changed(replies: &[tokio_postgres::SimpleQueryMessage]) -> u64 {
    replies
        .iter()
        .map(|r| match r {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => *n,
            _ => 0,
        })
        .sum()
}

fn key_text(value: &KeyValue) -> String {
    match value {
        KeyValue::Text(text) => text.clone(),
        KeyValue::Bytes(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Runs `statement` under a savepoint: rolled back to it (and `Err`) when it fails.
async fn under_savepoint(
    client: &Client,
    statement: &str,
    params: &[&(dyn ToSql + Sync)],
) -> std::result::Result<u64, tokio_postgres::Error> {
    client.batch_execute("SAVEPOINT ferry_apply").await?;
    let result = client.execute(statement, params).await;
    finish_savepoint(client, result).await
}

fn db_error(table: &TableSchema, what: &str) -> impl FnOnce(tokio_postgres::Error) -> WorkerError {
    let context = format!("{what} table {:?}", table.table);
    move |source| WorkerError::Db { context, source }
}

/// Applies `changes` (per table of `sql`) inside the caller's transaction: every table's deletes,
/// then every table's upserts. Returns the lines that a constraint refuses for now (each once).
pub async fn apply_changes(
    client: &Client,
    sql: &[TableSql],
    changes: &[Changes],
) -> Result<Vec<Deferral>> {
    let mut deferred: BTreeMap<u64, Deferral> = BTreeMap::new();
    for (table, changes) in sql.iter().zip(changes) {
        if !changes.deletes.is_empty() {
            delete_keys(client, table, &changes.deletes, &mut deferred).await?;
        }
    }
    for (table, changes) in sql.iter().zip(changes) {
        if !changes.upserts.is_empty() {
            upsert_rows(client, table, &changes.upserts, &mut deferred).await?;
        }
    }
    Ok(deferred.into_values().collect())
}

fn defer(deferred: &mut BTreeMap<u64, Deferral>, line_no: u64, raw: &[u8], reason: String) {
    deferred.entry(line_no).or_insert_with(|| Deferral {
        line_no,
        reason,
        raw: raw.to_vec(),
    });
}

async fn delete_keys(
    client: &Client,
    sql: &TableSql,
    deletes: &[Delete],
    deferred: &mut BTreeMap<u64, Deferral>,
) -> Result<()> {
    let batched = if sql.heliosdb && sql.helios_tree() {
        helios_tree_deletes(client, sql, deletes).await?
    } else if sql.heliosdb {
        helios_delete_batches(client, sql, deletes).await
    } else {
        pg_delete_batches(client, sql, deletes).await
    };
    match batched {
        Ok(()) => return Ok(()),
        Err(e) if is_deferrable(&e) => {
            tracing::debug!(table = %sql.table.table, error = %crate::server_message(&e), "a batched delete was refused: deleting key by key");
        }
        Err(e) => return Err(db_error(&sql.table, "cannot delete from")(e)),
    }
    let statement = sql.delete_one_sql();
    for delete in deletes {
        let texts: Vec<String> = delete.key.iter().map(key_text).collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
        match under_savepoint(client, &statement, &params).await {
            Ok(_) => {}
            Err(e) if is_deferrable(&e) => defer(
                deferred,
                delete.line_no,
                &delete.raw,
                format!(
                    "deleting {} from table {:?}: {}",
                    super::describe_key(&sql.table, &delete.key, crate::redact::mode()),
                    sql.table.table,
                    crate::redact::server_text(&crate::server_message(&e), crate::redact::mode())
                ),
            ),
            Err(e) => return Err(db_error(&sql.table, "cannot delete from")(e)),
        }
    }
    Ok(())
}

/// Every delete of `deletes` in batches under one savepoint (all of them, or none).
async fn pg_delete_batches(
    client: &Client,
    sql: &TableSql,
    deletes: &[Delete],
) -> std::result::Result<(), tokio_postgres::Error> {
    let statement = sql.pg_delete_sql();
    client.batch_execute("SAVEPOINT ferry_apply").await?;
    let result = async {
        for batch in deletes.chunks(PG_DELETE_BATCH) {
            let columns = sql.key_columns().len();
            let arrays: Vec<Vec<String>> = (0..columns)
                .map(|c| batch.iter().map(|d| key_text(&d.key[c])).collect())
                .collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            client.execute(statement.as_str(), &params).await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    finish_savepoint(client, result).await
}

/// Ends the `ferry_apply` savepoint after `result`: released when it succeeded; rolled back to
/// and released when it failed (the transaction goes on), except after a lost race (the whole
/// transaction is over).
async fn finish_savepoint<T>(
    client: &Client,
    result: std::result::Result<T, tokio_postgres::Error>,
) -> std::result::Result<T, tokio_postgres::Error> {
    match result {
        Ok(value) => {
            client
                .batch_execute("RELEASE SAVEPOINT ferry_apply")
                .await?;
            Ok(value)
        }
        Err(e) => {
            if !is_lost_race(&e) {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT ferry_apply")
                    .await?;
                // The savepoint outlives ROLLBACK TO, on PostgreSQL as on HeliosDB.
                client
                    .batch_execute("RELEASE SAVEPOINT ferry_apply")
                    .await?;
            }
            Err(e)
        }
    }
}

/// HeliosDB: the search tree over sorted keys, [`HELIOS_TREE_KEYS`] per statement, under one
/// savepoint (all of them, or none); tables it does not serve take [`helios_delete_batches`].
/// A statement that reports more rows than it has keys is an error (the predicate matches listed
/// keys only; this checks it).
async fn helios_tree_deletes(
    client: &Client,
    sql: &TableSql,
    deletes: &[Delete],
) -> Result<std::result::Result<(), tokio_postgres::Error>> {
    if deletes
        .iter()
        .any(|d| d.key.iter().any(|k| matches!(k, KeyValue::Bytes(_))))
    {
        return Ok(helios_delete_batches(client, sql, deletes).await);
    }
    let mut keys: Vec<&Key> = deletes.iter().map(|d| &d.key).collect();
    keys.sort();
    keys.dedup();
    let mut statements = Vec::new();
    for batch in keys.chunks(HELIOS_TREE_KEYS) {
        let statement = sql.helios_tree_delete_sql(batch).map_err(|e| {
            WorkerError::Internal(format!("a key of table {:?}: {e}", sql.table.table))
        })?;
        statements.push((statement, batch.len() as u64));
    }
    if let Err(e) = client.batch_execute("SAVEPOINT ferry_apply").await {
        return Ok(Err(e));
    }
    let mut too_many = None;
    let result = async {
        for (statement, listed) in &statements {
            let deleted = rows_changed(&client.simple_query(statement).await?);
            if deleted > *listed {
                too_many = Some((deleted, *listed));
                break;
            }
        }
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    let result = finish_savepoint(client, result).await;
    if let Some((deleted, listed)) = too_many {
        return Err(WorkerError::Internal(format!(
            "a delete of {listed} keys from table {:?} removed {deleted} rows",
            sql.table.table
        )));
    }
    Ok(result)
}

/// HeliosDB, tables the search tree does not serve: sorted keys, [`HELIOS_DELETE_BATCH`] per
/// statement (see the module docs).
async fn helios_delete_batches(
    client: &Client,
    sql: &TableSql,
    deletes: &[Delete],
) -> std::result::Result<(), tokio_postgres::Error> {
    let separator = KEY_SEPARATOR.to_string();
    let (mut batchable, alone): (Vec<&Delete>, Vec<&Delete>) = deletes.iter().partition(|d| {
        sql.helios_batchable()
            && d.key.iter().all(|k| match k {
                KeyValue::Text(text) => !text.contains(KEY_SEPARATOR),
                KeyValue::Bytes(_) => false,
            })
    });
    batchable.sort_by(|a, b| a.key.cmp(&b.key));
    batchable.dedup_by(|a, b| a.key == b.key);
    let range = sql.key_columns()[0].pg_type == PgType::Text;
    let single = sql.key_columns().len() == 1;
    client.batch_execute("SAVEPOINT ferry_apply").await?;
    let result = async {
        for batch in batchable.chunks(HELIOS_DELETE_BATCH) {
            let statement = sql.helios_delete_sql(batch.len());
            let mut texts: Vec<String> = Vec::with_capacity(batch.len() + 3);
            if range {
                texts.push(key_text(&batch[0].key[0]));
                texts.push(key_text(&batch[batch.len() - 1].key[0]));
            }
            if !single {
                texts.push(separator.clone());
            }
            texts.extend(batch.iter().map(|d| {
                d.key
                    .iter()
                    .map(key_text)
                    .collect::<Vec<_>>()
                    .join(&separator)
            }));
            let params: Vec<&(dyn ToSql + Sync)> =
                texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
            client.execute(statement.as_str(), &params).await?;
        }
        let statement = sql.delete_one_sql();
        for delete in alone {
            let texts: Vec<String> = delete.key.iter().map(key_text).collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
            client.execute(statement.as_str(), &params).await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    finish_savepoint(client, result).await
}

async fn upsert_rows(
    client: &Client,
    sql: &TableSql,
    upserts: &[Upsert],
    deferred: &mut BTreeMap<u64, Deferral>,
) -> Result<()> {
    // A value no literal can carry (HeliosDB) is refused for the row alone, up front.
    let mut rows: Vec<&Upsert> = Vec::with_capacity(upserts.len());
    for upsert in upserts {
        if sql.heliosdb && upsert.values.iter().flatten().any(|v| v.contains('\0')) {
            defer_upsert(deferred, sql, upsert, &LiteralError::Nul.to_string());
        } else {
            rows.push(upsert);
        }
    }
    for batch in rows.chunks(sql.rows_per_statement) {
        match upsert_statement(client, sql, batch).await? {
            Ok(_) => continue,
            Err(e) if is_deferrable(&e) => {
                tracing::debug!(table = %sql.table.table, error = %crate::redact::server_text(&crate::server_message(&e), crate::redact::mode()), "an upsert was refused: applying its rows one by one");
            }
            Err(e) => return Err(db_error(&sql.table, "cannot upsert into")(e)),
        }
        // Row by row, in rounds while any row goes in (a value freed by one row lets another in).
        let mut remaining: Vec<&Upsert> = batch.to_vec();
        loop {
            let mut failed = Vec::new();
            for upsert in &remaining {
                match upsert_statement(client, sql, &[upsert]).await? {
                    Ok(_) => {}
                    Err(e) if is_deferrable(&e) => {
                        failed.push((*upsert, crate::server_message(&e)))
                    }
                    Err(e) => return Err(db_error(&sql.table, "cannot upsert into")(e)),
                }
            }
            let progressed = failed.len() < remaining.len();
            if failed.is_empty() || !progressed {
                for (upsert, reason) in failed {
                    defer_upsert(deferred, sql, upsert, &reason);
                }
                break;
            }
            remaining = failed.into_iter().map(|(u, _)| u).collect();
        }
    }
    Ok(())
}

/// One upsert statement of `rows` under a savepoint: on PostgreSQL with text parameters cast to
/// their types; on HeliosDB with literal values ([`TableSql::helios_upsert_sql`]) over the simple
/// protocol. The inner result is the server's answer.
async fn upsert_statement(
    client: &Client,
    sql: &TableSql,
    rows: &[&Upsert],
) -> Result<std::result::Result<u64, tokio_postgres::Error>> {
    if sql.heliosdb {
        let statement = sql
            .helios_upsert_sql(rows)
            .map_err(|e| WorkerError::Internal(e.to_string()))?;
        return Ok(helios_under_savepoint(client, &statement).await);
    }
    let statement = sql.upsert_sql(rows.len());
    let params: Vec<&(dyn ToSql + Sync)> = rows
        .iter()
        .flat_map(|u| u.values.iter().map(|v| v as &(dyn ToSql + Sync)))
        .collect();
    Ok(under_savepoint(client, &statement, &params).await)
}

/// A row refused for now: deferred to the end of the window with the server's words.
fn defer_upsert(
    deferred: &mut BTreeMap<u64, Deferral>,
    sql: &TableSql,
    upsert: &Upsert,
    reason: &str,
) {
    defer(
        deferred,
        upsert.line_no,
        &upsert.raw,
        format!(
            "upserting {} into table {:?}: {}",
            super::describe_key(&sql.table, &upsert.key, crate::redact::mode()),
            sql.table.table,
            crate::redact::server_text(reason, crate::redact::mode())
        ),
    );
}

/// The applier's sink: a chunk's changes are gathered, then applied with the chunk's checkpoint
/// in one transaction ([`Sink::commit`]).
pub struct ApplySink<'c> {
    client: &'c Client,
    sql: Vec<TableSql>,
    pending: Vec<Changes>,
    current: Option<usize>,
    describe: String,
}

impl<'c> ApplySink<'c> {
    /// A sink for `tables` on `client` (a target of `kind`); the caller has checked that the
    /// window may apply now ([`ferry_ledger::window::check_next`]).
    pub fn new(client: &'c Client, tables: &[TableSchema], kind: TargetKind) -> ApplySink<'c> {
        let heliosdb = kind == TargetKind::HeliosDb;
        ApplySink {
            client,
            sql: tables.iter().map(|t| TableSql::new(t, heliosdb)).collect(),
            pending: tables.iter().map(|_| Changes::default()).collect(),
            current: None,
            describe: format!(
                "upserts and deletes in one transaction per chunk ({})",
                if heliosdb { "HeliosDB" } else { "PostgreSQL" }
            ),
        }
    }

    fn clear(&mut self) {
        self.current = None;
        for changes in &mut self.pending {
            changes.upserts.clear();
            changes.deletes.clear();
        }
    }

    async fn apply_chunk(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        if !write_checkpoint(self.client, checkpoint).await? {
            return Ok(false);
        }
        let deferred = apply_changes(self.client, &self.sql, &self.pending).await?;
        if !deferred.is_empty() {
            tracing::info!(shard = checkpoint.shard_id, deferred = deferred.len(), "change records deferred to the end of the window (a constraint refused them for now)");
            ferry_ledger::window::record_deferred(
                self.client,
                checkpoint.run_id,
                checkpoint.shard_id,
                checkpoint.generation,
                &deferred,
            )
            .await?;
        }
        Ok(true)
    }
}

#[async_trait]
impl Sink for ApplySink<'_> {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn rows_commit_with_checkpoint(&self) -> bool {
        true
    }

    async fn begin_chunk(&mut self) -> Result<()> {
        self.clear();
        Ok(())
    }

    async fn probe(&self, _table: usize, _key: &[KeyValue], _provenance: i64) -> Result<Presence> {
        // Changes are never proven: they commit with their checkpoint, and their keys are in the
        // tables by design.
        Ok(Presence::Absent)
    }

    async fn begin_table(&mut self, table: usize) -> Result<()> {
        self.current = Some(table);
        Ok(())
    }

    async fn send(&mut self, rows: TableRows) -> Result<()> {
        let Payload::Changes(mut changes) = rows.payload else {
            return Err(WorkerError::Internal(
                "rows encoded for another load path reached the applier".into(),
            ));
        };
        let pending = &mut self.pending[rows.table];
        pending.upserts.append(&mut changes.upserts);
        pending.deletes.append(&mut changes.deletes);
        Ok(())
    }

    async fn end_table(&mut self) -> Result<TableEnd> {
        let table = self.current.take().unwrap_or_default();
        let pending = &self.pending[table];
        Ok(TableEnd::Written(
            (pending.upserts.len() + pending.deletes.len()) as u64,
        ))
    }

    async fn abort(&mut self) -> Result<()> {
        self.clear();
        Ok(())
    }

    async fn commit(&mut self, checkpoint: &Checkpoint<'_>) -> Result<bool> {
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(WorkerError::db("cannot begin a chunk"))?;
        let applied = self.apply_chunk(checkpoint).await;
        let ended = match applied {
            Ok(true) => match self.client.batch_execute("COMMIT").await {
                Ok(()) => Ok(true),
                Err(e) if is_lost_race(&e) => Ok(false),
                Err(e) => Err(WorkerError::Db {
                    context: "cannot commit a chunk".into(),
                    source: e,
                }),
            },
            Ok(false) => Ok(false),
            Err(e) if lost_race_of(&e) => {
                tracing::info!(shard = checkpoint.shard_id, error = %e, "another loader holds this chunk");
                Ok(false)
            }
            Err(e) => Err(e),
        };
        if !matches!(ended, Ok(true)) {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        self.clear();
        ended
    }
}

/// What a window's ended load leaves: nothing is removed. A shard of a window started over keeps
/// the rows its earlier attempt wrote (they are the window's changes, applied again from the
/// start: removing them by provenance would lose the rows as they were before the window).
pub struct KeepWindowRows;

#[async_trait]
impl Unload for KeepWindowRows {
    async fn remove_rows(&self, _table: &TableSchema, _load_id: i64) -> Result<u64> {
        Ok(0)
    }
}

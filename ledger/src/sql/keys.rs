//! Keys built after the load (schema version 6): `ferry.pending_keys`, one row per table a run
//! created without its key, with the statement that adds the key, its state (`pending`,
//! `building`, `built`, `failed`), who started the last build, and why it failed.
//!
//! The row is written in the transaction that creates the table (PostgreSQL's DDL is
//! transactional), so a table without its key is never without the row that says who builds it;
//! the key and the row's `built` state commit together too. Every statement binds its values as
//! parameters cast in the SQL text, as [`crate::sql`] does.

/// The statements of schema version 6 (idempotent).
pub const MIGRATION: &[&str] = &["CREATE TABLE IF NOT EXISTS ferry.pending_keys (
        table_name TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        key_sql TEXT NOT NULL,
        state TEXT NOT NULL,
        builder TEXT,
        error TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )"];

/// Pending-key states.
pub mod key_state {
    /// The table was created without its key; nobody has started building it.
    pub const PENDING: &str = "pending";
    /// A build started (`builder` says who); until `built`, it did not commit.
    pub const BUILDING: &str = "building";
    /// The key is on the table.
    pub const BUILT: &str = "built";
    /// The build was refused (a key the table holds twice); `error` says where.
    pub const FAILED: &str = "failed";
}

/// The columns of a pending-key row, in [`SELECT_KEY`]'s order.
pub const KEY_COLUMNS: &str = "table_name, run_id, key_sql, state, builder, error";

/// Records that `$1` table is created by `$2` run without its key, added by `$3`. Run in the
/// transaction whose `CREATE TABLE` just succeeded, so a record already there is of a table of
/// that name that was dropped since: it is replaced.
pub const INSERT_KEY: &str = "INSERT INTO ferry.pending_keys (table_name, run_id, key_sql, state)
    VALUES ($1::text, $2::text, $3::text, 'pending')
    ON CONFLICT (table_name) DO UPDATE SET run_id = EXCLUDED.run_id, key_sql = EXCLUDED.key_sql,
        state = 'pending', builder = NULL, error = NULL, created_at = now(), updated_at = now()";

/// The pending key of `$1` table.
pub const SELECT_KEY: &str = "SELECT table_name, run_id, key_sql, state, builder, error
    FROM ferry.pending_keys WHERE table_name = $1::text";

/// The same, locked until the end of the transaction (one builder at a time).
pub const LOCK_KEY: &str = "SELECT table_name, run_id, key_sql, state, builder, error
    FROM ferry.pending_keys WHERE table_name = $1::text FOR UPDATE";

/// Every key `$1` run created its tables without, by table.
pub const SELECT_RUN_KEYS: &str = "SELECT table_name, run_id, key_sql, state, builder, error
    FROM ferry.pending_keys WHERE run_id = $1::text ORDER BY table_name";

/// Hands `$1` table's key to `$2` run when the run that created it never reached the ledger (a
/// plan that stopped between creating the table and recording its run): 1 row when it did.
pub const ADOPT_KEY: &str = "UPDATE ferry.pending_keys SET run_id = $2::text, updated_at = now()
    WHERE table_name = $1::text AND state <> 'built'
      AND (run_id = $2::text OR NOT EXISTS (
          SELECT 1 FROM ferry.runs r WHERE r.run_id = ferry.pending_keys.run_id))";

/// Sets `$1` table's key state to `$2`, with `$3` builder and `$4` error. A `built` key never
/// goes back: a second finalize whose `building` mark waited on the first one's build would
/// otherwise mark the built key unbuilt, and build it again.
pub const SET_KEY_STATE: &str = "UPDATE ferry.pending_keys
    SET state = $2::text, builder = $3::text, error = $4::text, updated_at = now()
    WHERE table_name = $1::text AND (state <> 'built' OR $2::text = 'built')";

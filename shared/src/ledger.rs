//! The `ferry` ledger schema and its SQL.
//!
//! The ledger lives in the target database, beside the data, so one transaction can load a chunk's
//! rows and advance its shard's checkpoint together (design.md §3):
//! - `ferry.runs`: one row per run: the export, the target table, the resolved schema, the fixed
//!   chunk size, `max_rejects`, and the run's state;
//! - `ferry.shards`: one row per data file: its manifest `itemCount` and MD5, the checkpoint
//!   (`committed_lines`), counts of loaded, rejected, filtered rows and spilled values, and its state;
//! - `ferry.rejects`: one row per rejected input line: shard, line number, reason and the raw line.
//!
//! Every statement here binds its values as parameters cast to their types in the SQL text
//! (`$1::text`), which both PostgreSQL and HeliosDB accept.

/// Creates the ledger schema; safe to run on every start.
pub const CREATE_LEDGER: &[&str] = &[
    "CREATE SCHEMA IF NOT EXISTS ferry",
    "CREATE TABLE IF NOT EXISTS ferry.runs (
        run_id TEXT PRIMARY KEY,
        export_location TEXT NOT NULL,
        export_arn TEXT,
        export_time TEXT,
        target_table TEXT NOT NULL,
        schema_json TEXT NOT NULL,
        chunk_lines BIGINT NOT NULL,
        max_rejects BIGINT NOT NULL,
        manifest_verified BOOLEAN NOT NULL,
        manifest_items BIGINT,
        state TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ,
        report TEXT
    )",
    "CREATE TABLE IF NOT EXISTS ferry.shards (
        run_id TEXT NOT NULL,
        shard_id TEXT NOT NULL,
        data_key TEXT NOT NULL,
        item_count BIGINT,
        md5_checksum TEXT,
        size_bytes BIGINT,
        committed_lines BIGINT NOT NULL DEFAULT 0,
        loaded_rows BIGINT NOT NULL DEFAULT 0,
        rejected_rows BIGINT NOT NULL DEFAULT 0,
        filtered_rows BIGINT NOT NULL DEFAULT 0,
        spilled_values BIGINT NOT NULL DEFAULT 0,
        items_seen BIGINT,
        md5_ok BOOLEAN,
        state TEXT NOT NULL DEFAULT 'pending',
        error TEXT,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, shard_id)
    )",
    "CREATE TABLE IF NOT EXISTS ferry.rejects (
        run_id TEXT NOT NULL,
        shard_id TEXT NOT NULL,
        line_no BIGINT NOT NULL,
        reason TEXT NOT NULL,
        raw_line BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, shard_id, line_no)
    )",
];

/// Run states.
pub mod run_state {
    /// Planned; shards not all done yet.
    pub const LOADING: &str = "loading";
    /// Every shard reconciled and rejects within `max_rejects`.
    pub const COMPLETE: &str = "complete";
    /// Finished, but not verified (a shard failed, or rejects over the limit, or no manifest).
    pub const FAILED: &str = "failed";
}

/// Shard states.
pub mod shard_state {
    /// Not finished; `committed_lines` says how far it got.
    pub const PENDING: &str = "pending";
    /// Every line committed, the MD5 and the item count reconciled.
    pub const DONE: &str = "done";
    /// Stopped by an error in the data file itself (checksum, count, corrupt gzip, duplicate key).
    pub const FAILED: &str = "failed";
}

/// `$1` run_id.
pub const SELECT_RUN: &str =
    "SELECT run_id, export_location, export_arn, export_time, target_table, schema_json,
        chunk_lines, max_rejects, manifest_verified, manifest_items, state
    FROM ferry.runs WHERE run_id = $1::text";

/// Inserts a run (`ON CONFLICT DO NOTHING`: two coordinators planning the same run agree).
pub const INSERT_RUN: &str = "INSERT INTO ferry.runs (run_id, export_location, export_arn, export_time,
        target_table, schema_json, chunk_lines, max_rejects, manifest_verified, manifest_items, state)
    VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::int8, $8::int8, $9::boolean, $10::int8, $11::text)
    ON CONFLICT (run_id) DO NOTHING";

/// Inserts a shard (idempotent).
pub const INSERT_SHARD: &str =
    "INSERT INTO ferry.shards (run_id, shard_id, data_key, item_count, md5_checksum, size_bytes)
    VALUES ($1::text, $2::text, $3::text, $4::int8, $5::text, $6::int8)
    ON CONFLICT (run_id, shard_id) DO NOTHING";

/// `$1` run_id.
pub const SELECT_SHARDS: &str =
    "SELECT shard_id, data_key, item_count, md5_checksum, size_bytes, committed_lines,
        loaded_rows, rejected_rows, filtered_rows, spilled_values, items_seen, md5_ok, state, error
    FROM ferry.shards WHERE run_id = $1::text ORDER BY shard_id";

/// `$1` run_id, `$2` shard_id.
pub const SELECT_SHARD: &str =
    "SELECT shard_id, data_key, item_count, md5_checksum, size_bytes, committed_lines,
        loaded_rows, rejected_rows, filtered_rows, spilled_values, items_seen, md5_ok, state, error
    FROM ferry.shards WHERE run_id = $1::text AND shard_id = $2::text";

/// The conditional checkpoint of design.md §3: moves `committed_lines` from `$3` to `$4` and adds the
/// chunk's counts; touches one row only if no other worker moved the checkpoint first.
/// `$1` run, `$2` shard, `$3` from, `$4` to, `$5` loaded, `$6` rejected, `$7` spilled, `$8` filtered.
pub const ADVANCE_CHECKPOINT: &str = "UPDATE ferry.shards SET committed_lines = $4::int8,
        loaded_rows = loaded_rows + $5::int8, rejected_rows = rejected_rows + $6::int8,
        spilled_values = spilled_values + $7::int8, filtered_rows = filtered_rows + $8::int8,
        state = 'pending', error = NULL, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND committed_lines = $3::int8 AND state <> 'done'";

/// Like [`ADVANCE_CHECKPOINT`] for the last chunk of a shard: also records the reconciliation and
/// marks the shard done. `$8` items seen in the file, `$9` whether the MD5 matched (NULL: no manifest),
/// `$10` filtered.
/// `$10` filtered.
pub const FINISH_SHARD: &str = "UPDATE ferry.shards SET committed_lines = $4::int8,
        loaded_rows = loaded_rows + $5::int8, rejected_rows = rejected_rows + $6::int8,
        spilled_values = spilled_values + $7::int8, items_seen = $8::int8, md5_ok = $9::boolean,
        filtered_rows = filtered_rows + $10::int8,
        state = 'done', error = NULL, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND committed_lines = $3::int8 AND state <> 'done'";

/// Marks a shard failed with a reason. `$1` run, `$2` shard, `$3` error, `$4` md5_ok (nullable), `$5` items seen (nullable).
pub const FAIL_SHARD: &str =
    "UPDATE ferry.shards SET state = 'failed', error = $3::text, md5_ok = $4::boolean,
        items_seen = $5::int8, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND state <> 'done'";

/// Records a rejected line. `$1` run, `$2` shard, `$3` line, `$4` reason, `$5` raw line.
pub const INSERT_REJECT: &str =
    "INSERT INTO ferry.rejects (run_id, shard_id, line_no, reason, raw_line)
    VALUES ($1::text, $2::text, $3::int8, $4::text, $5::bytea)";

/// Sets a run's state (and report when finished). `$1` run, `$2` state, `$3` report.
pub const FINISH_RUN: &str =
    "UPDATE ferry.runs SET state = $2::text, report = $3::text, finished_at = now()
    WHERE run_id = $1::text";

/// Sets a run's `max_rejects` (a policy the user may raise and re-run). `$1` run, `$2` max.
pub const SET_MAX_REJECTS: &str =
    "UPDATE ferry.runs SET max_rejects = $2::int8 WHERE run_id = $1::text";

/// The first rejects of a run, for the report (a literal limit: HeliosDB takes no LIMIT parameter).
/// `$1` run.
pub const SELECT_REJECTS: &str = "SELECT shard_id, line_no, reason FROM ferry.rejects
    WHERE run_id = $1::text ORDER BY shard_id, line_no LIMIT 10";

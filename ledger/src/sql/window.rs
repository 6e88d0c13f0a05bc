//! Catch-up windows in the ledger (schema version 5): which incremental exports were applied to
//! which full run, in which order, and the change records a window set aside until its end.
//!
//! - `ferry.windows`: one row per window, keyed by the window's run: the full run it follows
//!   (`base_run_id`), its place in that run's chain (`seq`, 1 for the window starting at the full
//!   export's time), its `exportFromTime`/`exportToTime` as written and in microseconds, its view
//!   type and state (`applying`, `complete`, `failed`). `UNIQUE (base_run_id, seq)` and
//!   `UNIQUE (base_run_id, from_micros)` make the chain linear even when two coordinators plan at
//!   once: a second window claiming the same place, or starting where another starts, is refused.
//! - `ferry.deferred`: change records a constraint refused while their window was being applied
//!   (a unique value moving between items, a child before its parent), by shard and line, with the
//!   record itself; retried when every file of the window is in.
//!
//! Every statement binds its values as parameters cast in the SQL text, as [`crate::sql`] does.

/// The statements of schema version 5 (idempotent).
pub const MIGRATION: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ferry.windows (
        run_id TEXT PRIMARY KEY,
        base_run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        export_arn TEXT,
        export_from TEXT NOT NULL,
        export_to TEXT NOT NULL,
        from_micros BIGINT NOT NULL,
        to_micros BIGINT NOT NULL,
        output_view TEXT,
        state TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        finished_at TIMESTAMPTZ,
        UNIQUE (base_run_id, seq),
        UNIQUE (base_run_id, from_micros)
    )",
    "CREATE TABLE IF NOT EXISTS ferry.deferred (
        run_id TEXT NOT NULL,
        shard_id TEXT NOT NULL,
        line_no BIGINT NOT NULL,
        generation BIGINT NOT NULL DEFAULT 0,
        reason TEXT NOT NULL,
        raw_line BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, shard_id, line_no)
    )",
];

/// Window states.
pub mod window_state {
    /// Planned; its shards are being applied (or wait to be).
    pub const APPLYING: &str = "applying";
    /// Every shard applied, every deferred record resolved, rejects within the limit.
    pub const COMPLETE: &str = "complete";
    /// Finished but not verified (a shard failed, too many rejects): the chain stops here.
    pub const FAILED: &str = "failed";
}

/// The columns of a window row, in [`SELECT_WINDOW`]'s order.
pub const WINDOW_COLUMNS: &str = "run_id, base_run_id, seq, export_arn, export_from, export_to,
    from_micros, to_micros, output_view, state";

/// A window by its run. `$1` run.
pub const SELECT_WINDOW: &str =
    "SELECT run_id, base_run_id, seq, export_arn, export_from, export_to,
    from_micros, to_micros, output_view, state FROM ferry.windows WHERE run_id = $1::text";

/// A full run's chain of windows, in order. `$1` base run.
pub const SELECT_CHAIN: &str =
    "SELECT run_id, base_run_id, seq, export_arn, export_from, export_to,
    from_micros, to_micros, output_view, state FROM ferry.windows
    WHERE base_run_id = $1::text ORDER BY seq";

/// The window at `seq` of a chain. `$1` base run, `$2` seq.
pub const SELECT_WINDOW_AT: &str =
    "SELECT run_id, base_run_id, seq, export_arn, export_from, export_to,
    from_micros, to_micros, output_view, state FROM ferry.windows
    WHERE base_run_id = $1::text AND seq = $2::int8";

/// Records a window in its chain; refused (unique violation) when another window holds its place
/// or starts at the same time. `$1` run, `$2` base run, `$3` seq, `$4` export ARN, `$5` from,
/// `$6` to, `$7` from µs, `$8` to µs, `$9` view.
pub const INSERT_WINDOW: &str = "INSERT INTO ferry.windows (run_id, base_run_id, seq, export_arn,
        export_from, export_to, from_micros, to_micros, output_view, state)
    VALUES ($1::text, $2::text, $3::int8, $4::text, $5::text, $6::text, $7::int8, $8::int8,
        $9::text, 'applying')";

/// Sets a window's state. `$1` run, `$2` state.
pub const SET_WINDOW_STATE: &str = "UPDATE ferry.windows SET state = $2::text, finished_at = now()
    WHERE run_id = $1::text";

/// Records a deferred change record (idempotent: a retried chunk records it again). `$1` run,
/// `$2` shard, `$3` line, `$4` generation, `$5` reason, `$6` the record.
pub const UPSERT_DEFERRED: &str = "INSERT INTO ferry.deferred (run_id, shard_id, line_no,
        generation, reason, raw_line)
    VALUES ($1::text, $2::text, $3::int8, $4::int8, $5::text, $6::bytea)
    ON CONFLICT (run_id, shard_id, line_no) DO UPDATE
    SET generation = EXCLUDED.generation, reason = EXCLUDED.reason, raw_line = EXCLUDED.raw_line";

/// A window's deferred records, in order. `$1` run.
pub const SELECT_DEFERRED: &str = "SELECT shard_id, line_no, generation, reason, raw_line
    FROM ferry.deferred WHERE run_id = $1::text ORDER BY shard_id, line_no";

/// How many records a window has deferred. `$1` run.
pub const COUNT_DEFERRED: &str =
    "SELECT count(*)::int8 FROM ferry.deferred WHERE run_id = $1::text";

/// Takes one deferred record (its retry commits only if this removed it). `$1` run, `$2` shard,
/// `$3` line.
pub const DELETE_DEFERRED: &str = "DELETE FROM ferry.deferred
    WHERE run_id = $1::text AND shard_id = $2::text AND line_no = $3::int8";

/// Removes the deferred records of a shard's earlier generations. `$1` run, `$2` shard,
/// `$3` current generation.
pub const DELETE_STALE_DEFERRED: &str = "DELETE FROM ferry.deferred
    WHERE run_id = $1::text AND shard_id = $2::text AND generation < $3::int8";

/// A deferred record that never applied becomes a reject: its shard counts it as rejected instead
/// of applied. `$1` run, `$2` shard.
pub const COUNT_DEFERRED_AS_REJECTED: &str = "UPDATE ferry.shards
    SET loaded_rows = loaded_rows - 1, rejected_rows = rejected_rows + 1, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text";

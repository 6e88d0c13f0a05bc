//! The `ferry` ledger schema and its SQL.
//!
//! The ledger lives in the target database, beside the data, so one transaction can load a chunk's
//! rows and advance its shard's checkpoint together (`docs/design.md` §3):
//! - `ferry.runs`: one row per run: the export, the target table, the resolved schema, the fixed
//!   chunk size, `max_rejects`, the load path chosen at plan, and the run's state;
//! - `ferry.shards`: one row per data file: its manifest `itemCount` and MD5, the checkpoint
//!   (`committed_lines`), counts of loaded, rejected, filtered rows and spilled values, its state,
//!   and its `generation` (raised each time the shard's rows are removed to load it again);
//! - `ferry.rejects`: one row per rejected input line: shard, line number, reason, the raw line and
//!   the generation that recorded it;
//! - `ferry.loads`: one row per (shard, generation): the identity of the data file that generation
//!   reads (ETag or size and modification time), claimed before its first row is written, and the
//!   `load_id` that every row it writes carries in its `_ferry_chunk` provenance column
//!   (`load_id << 24 | chunk index`);
//! - `ferry.run_tokens`: one random token per run, made when it is planned: its queue messages
//!   carry it, so a worker never loads another target's shard (version 4);
//! - `ferry.steps`: one row per post-load step of a run, marked started and done, so a crash during
//!   the post-load steps resumes at the first step not done;
//! - `ferry.outputs` (v3): a run whose target is a Parquet dataset: its location and the
//!   dataset's settings (the rows are in the files, the ledger stays in the database);
//! - `ferry.output_files` (v3): one row per Parquet file committed: its table, the load and chunk
//!   that wrote it, its key, rows and bytes (what finalize's `_manifest.json` lists);
//! - `ferry.windows`, `ferry.deferred` (v5): incremental exports applied after a full run, in
//!   order, and the change records a window set aside until its end ([`window`]);
//! - `ferry.pending_keys` (v6): a table a run created without its key, to be built after the
//!   load, and the state of that build ([`keys`]);
//! - `ferry.chunk_digests`, `ferry.verifications` (v7): each chunk's digest of the items it
//!   wrote, per table, recorded with its checkpoint; each table's last deep verification
//!   ([`digests`]).
//! - `ferry.meta`: `schema_version`, so a newer Ferry migrates the ledger in place
//!   ([`MIGRATIONS`]) and an older one refuses a ledger it does not know; and `target_token`, a
//!   random value made the first time a queue is bound to this target, which that queue carries
//!   as its `ferry-target` tag (`ferry_shared::sqs::TARGET_TAG`);
//! - `ferry.probes`: one row per `ferry-coordinator probe`: the decode rate per core, the target's
//!   ingest ceiling and the source read rate it measured, with when and on what machine
//!   ([`CREATE_PROBES`]). Outside the versioned schema: made by the probe when it first records,
//!   read by `plan --dry-run` only when present, ignored by every other command, so a ledger
//!   holding it is still the same version and an older Ferry uses it unchanged.
//!
//! Statements of catch-up windows are in [`window`].
//!
//! Every statement here binds its values as parameters cast to their types in the SQL text
//! (`$1::text`), which both PostgreSQL and HeliosDB accept.

pub mod digests;
pub mod keys;
pub mod window;

/// The ledger schema this Ferry writes.
pub const SCHEMA_VERSION: i64 = 7;

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
    "CREATE TABLE IF NOT EXISTS ferry.meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )",
];

/// In-place migrations: `(version, statements)`, applied in order to a ledger whose
/// `schema_version` is below `version`. Every statement is idempotent (`IF NOT EXISTS`), since
/// DDL is not transactional on every target and two processes may migrate at once.
pub const MIGRATIONS: &[(i64, &[&str])] = &[
(
    2,
    &[
        "ALTER TABLE ferry.runs ADD COLUMN IF NOT EXISTS load_path TEXT",
        "ALTER TABLE ferry.shards ADD COLUMN IF NOT EXISTS generation BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE ferry.rejects ADD COLUMN IF NOT EXISTS generation BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE ferry.shards ADD COLUMN IF NOT EXISTS copying_from BIGINT",
        "CREATE TABLE IF NOT EXISTS ferry.key_probes (
            probe_id TEXT NOT NULL,
            line_no BIGINT NOT NULL,
            k1 TEXT,
            k2 TEXT,
            PRIMARY KEY (probe_id, line_no)
        )",
        "CREATE TABLE IF NOT EXISTS ferry.loads (
            load_id BIGSERIAL PRIMARY KEY,
            run_id TEXT NOT NULL,
            shard_id TEXT NOT NULL,
            generation BIGINT NOT NULL,
            file_identity TEXT NOT NULL,
            cleaned BOOLEAN NOT NULL DEFAULT false,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            UNIQUE (run_id, shard_id, generation)
        )",
        "CREATE TABLE IF NOT EXISTS ferry.steps (
            run_id TEXT NOT NULL,
            step_no BIGINT NOT NULL,
            description TEXT NOT NULL,
            state TEXT NOT NULL,
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            millis BIGINT,
            note TEXT,
            PRIMARY KEY (run_id, step_no)
        )",
    ],
),
(
    3,
    &[
        "CREATE TABLE IF NOT EXISTS ferry.outputs (
            run_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            location TEXT NOT NULL,
            spec_json TEXT NOT NULL
        )",
        "CREATE TABLE IF NOT EXISTS ferry.output_files (
            run_id TEXT NOT NULL,
            table_name TEXT NOT NULL,
            load_id BIGINT NOT NULL,
            chunk_index BIGINT NOT NULL,
            object_key TEXT NOT NULL,
            row_count BIGINT NOT NULL,
            byte_count BIGINT NOT NULL,
            PRIMARY KEY (run_id, table_name, load_id, chunk_index)
        )",
    ],
),
(
    // The target token of each run (what its queue messages carry).
    4,
    &["CREATE TABLE IF NOT EXISTS ferry.run_tokens (
            run_id TEXT PRIMARY KEY,
            token TEXT NOT NULL
        )"],
),
(
    // Catch-up windows and their deferred change records ([`window`]).
    5,
    window::MIGRATION,
),
(
    // Keys built after the load ([`keys`]).
    6,
    keys::MIGRATION,
),
(
    // Chunk digests and deep verifications ([`digests`]).
    7,
    digests::MIGRATION,
)];

/// The probe table ([`PROBE_COLUMNS`] plus when it was recorded); made by the probe before it
/// records, never by [`CREATE_LEDGER`] (see the module's notes).
pub const CREATE_PROBES: &str = "CREATE TABLE IF NOT EXISTS ferry.probes (
        probe_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        cores BIGINT NOT NULL,
        server TEXT NOT NULL,
        load_path TEXT NOT NULL,
        items_source TEXT NOT NULL,
        decode_items_per_sec BIGINT NOT NULL,
        read_items_per_sec BIGINT NOT NULL,
        decode_only_items_per_sec BIGINT NOT NULL,
        row_bytes BIGINT NOT NULL,
        ceiling_rows_per_sec BIGINT NOT NULL,
        ceiling_bytes_per_sec BIGINT NOT NULL,
        ceiling_connections BIGINT NOT NULL,
        levels_json TEXT NOT NULL,
        source_location TEXT,
        source_bytes_per_sec BIGINT,
        source_bytes_read BIGINT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )";

/// The columns of a probe row, in [`INSERT_PROBE`]'s and [`SELECT_LATEST_PROBE`]'s order.
pub const PROBE_COLUMNS: &str = "probe_id, host, cores, server, load_path, items_source,
        decode_items_per_sec, read_items_per_sec, decode_only_items_per_sec, row_bytes,
        ceiling_rows_per_sec,
        ceiling_bytes_per_sec, ceiling_connections, levels_json, source_location,
        source_bytes_per_sec, source_bytes_read";

/// Records a probe. `$1` … `$17` as [`PROBE_COLUMNS`].
pub const INSERT_PROBE: &str = "INSERT INTO ferry.probes (probe_id, host, cores, server, load_path,
        items_source, decode_items_per_sec, read_items_per_sec, decode_only_items_per_sec,
        row_bytes, ceiling_rows_per_sec, ceiling_bytes_per_sec, ceiling_connections, levels_json,
        source_location, source_bytes_per_sec, source_bytes_read)
    VALUES ($1::text, $2::text, $3::int8, $4::text, $5::text, $6::text, $7::int8, $8::int8,
        $9::int8, $10::int8, $11::int8, $12::int8, $13::int8, $14::text, $15::text, $16::int8,
        $17::int8)";

/// The latest probe: [`PROBE_COLUMNS`], then when it was recorded as text.
pub const SELECT_LATEST_PROBE: &str = "SELECT probe_id, host, cores, server, load_path,
        items_source, decode_items_per_sec, read_items_per_sec, decode_only_items_per_sec, row_bytes,
        ceiling_rows_per_sec, ceiling_bytes_per_sec, ceiling_connections, levels_json,
        source_location, source_bytes_per_sec, source_bytes_read, CAST(created_at AS TEXT) AS at
    FROM ferry.probes ORDER BY created_at DESC LIMIT 1";

/// Which of the ledger tables the estimate reads exist (`plan --dry-run` reads only what is
/// there, and creates nothing).
pub const SELECT_LEDGER_TABLES: &str =
    "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
    WHERE table_schema = 'ferry' AND table_name IN ('runs', 'shards', 'loads', 'probes')";

/// The latest finished runs, newest first (a literal limit: HeliosDB takes no LIMIT parameter).
pub const SELECT_FINISHED_RUNS: &str = "SELECT run_id, state, load_path, chunk_lines,
        CAST(finished_at AS TEXT) AS at
    FROM ferry.runs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 20";

/// Whether a run is a catch-up window (its rate is the applier's, not a load's). `$1` run.
pub const SELECT_IS_WINDOW: &str = "SELECT run_id FROM ferry.windows WHERE run_id = $1::text";

/// A run's done shards with the time their current generation was claimed (in autocommit) and
/// the time of their last checkpoint, in seconds since the epoch: what a worker took to load each.
/// In a transaction (the binary and INSERT paths) `now()` is the transaction's start, so there the
/// last checkpoint's time is when the last chunk began. `$1` run.
pub const SELECT_SHARD_TIMINGS: &str = "SELECT s.shard_id, s.committed_lines,
        CAST(s.loaded_rows + s.rejected_rows + s.filtered_rows AS BIGINT) AS items,
        CAST(extract(epoch FROM l.created_at) AS TEXT) AS started,
        CAST(extract(epoch FROM s.updated_at) AS TEXT) AS finished
    FROM ferry.shards s JOIN ferry.loads l
        ON l.run_id = s.run_id AND l.shard_id = s.shard_id AND l.generation = s.generation
    WHERE s.run_id = $1::text AND s.state = 'done'";

/// Records a run's target token, once (the first one stays). `$1` run, `$2` token.
pub const INSERT_RUN_TOKEN: &str = "INSERT INTO ferry.run_tokens (run_id, token)
    VALUES ($1::text, $2::text) ON CONFLICT (run_id) DO NOTHING";

/// Records the ledger's own target token once (the first value wins): the tag `queue create`
/// puts on a queue that serves this target (`ferry_shared::sqs::TARGET_TAG`). `$1` token.
pub const INSERT_TARGET_TOKEN: &str = "INSERT INTO ferry.meta (key, value)
    VALUES ('target_token', $1::text) ON CONFLICT (key) DO NOTHING";

/// The ledger's own target token, if it has one.
pub const SELECT_TARGET_TOKEN: &str = "SELECT value FROM ferry.meta WHERE key = 'target_token'";

/// A run's target token. `$1` run.
pub const SELECT_RUN_TOKEN: &str = "SELECT token FROM ferry.run_tokens WHERE run_id = $1::text";

/// The ledger's schema version (`$1` is unused; no row: a version-1 ledger or a new one).
pub const SELECT_SCHEMA_VERSION: &str = "SELECT value FROM ferry.meta WHERE key = 'schema_version'";

/// A row when the ledger holds any run.
pub const ANY_RUN: &str = "SELECT 1 FROM ferry.runs LIMIT 1";

/// Records the ledger's schema version. `$1` the version as text.
pub const SET_SCHEMA_VERSION: &str = "INSERT INTO ferry.meta (key, value)
    VALUES ('schema_version', $1::text)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

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
        chunk_lines, max_rejects, manifest_verified, manifest_items, state, load_path
    FROM ferry.runs WHERE run_id = $1::text";

/// Inserts a run (`ON CONFLICT DO NOTHING`: two coordinators planning the same run agree).
pub const INSERT_RUN: &str = "INSERT INTO ferry.runs (run_id, export_location, export_arn, export_time,
        target_table, schema_json, chunk_lines, max_rejects, manifest_verified, manifest_items, state,
        load_path)
    VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::int8, $8::int8, $9::boolean,
        $10::int8, $11::text, $12::text)
    ON CONFLICT (run_id) DO NOTHING";

/// Inserts a shard (idempotent).
pub const INSERT_SHARD: &str =
    "INSERT INTO ferry.shards (run_id, shard_id, data_key, item_count, md5_checksum, size_bytes)
    VALUES ($1::text, $2::text, $3::text, $4::int8, $5::text, $6::int8)
    ON CONFLICT (run_id, shard_id) DO NOTHING";

/// `$1` run_id.
pub const SELECT_SHARDS: &str =
    "SELECT shard_id, data_key, item_count, md5_checksum, size_bytes, committed_lines,
        loaded_rows, rejected_rows, filtered_rows, spilled_values, items_seen, md5_ok, state, error,
        generation, copying_from
    FROM ferry.shards WHERE run_id = $1::text ORDER BY shard_id";

/// `$1` run_id: each done shard's seconds from the start of each of its loads to its last ledger
/// update (the caller keeps the shortest per shard: the load that finished it).
pub const SELECT_SHARD_SECONDS: &str =
    "SELECT s.shard_id, (extract(epoch FROM s.updated_at) - extract(epoch FROM l.created_at))::float8
    FROM ferry.shards s JOIN ferry.loads l ON l.run_id = s.run_id AND l.shard_id = s.shard_id
    WHERE s.run_id = $1::text AND s.state = 'done'";

/// `$1` run_id, `$2` shard_id.
pub const SELECT_SHARD: &str =
    "SELECT shard_id, data_key, item_count, md5_checksum, size_bytes, committed_lines,
        loaded_rows, rejected_rows, filtered_rows, spilled_values, items_seen, md5_ok, state, error,
        generation, copying_from
    FROM ferry.shards WHERE run_id = $1::text AND shard_id = $2::text";

/// The conditional checkpoint of design.md §3: moves `committed_lines` from `$3` to `$4` and adds
/// the chunk's counts; touches one row only if no other worker moved the checkpoint first and the
/// shard's rows were not removed meanwhile (its generation is still `$9`).
/// `$1` run, `$2` shard, `$3` from, `$4` to, `$5` loaded, `$6` rejected, `$7` spilled,
/// `$8` filtered, `$9` generation.
pub const ADVANCE_CHECKPOINT: &str = "UPDATE ferry.shards SET committed_lines = $4::int8,
        loaded_rows = loaded_rows + $5::int8, rejected_rows = rejected_rows + $6::int8,
        spilled_values = spilled_values + $7::int8, filtered_rows = filtered_rows + $8::int8,
        state = 'pending', error = NULL, copying_from = NULL, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND committed_lines = $3::int8
        AND generation = $9::int8 AND state <> 'done'";

/// Like [`ADVANCE_CHECKPOINT`] for the last chunk of a shard: also records the reconciliation and
/// marks the shard done. `$8` items seen in the file, `$9` whether the MD5 matched (NULL: no
/// manifest), `$10` filtered, `$11` generation.
pub const FINISH_SHARD: &str = "UPDATE ferry.shards SET committed_lines = $4::int8,
        loaded_rows = loaded_rows + $5::int8, rejected_rows = rejected_rows + $6::int8,
        spilled_values = spilled_values + $7::int8, items_seen = $8::int8, md5_ok = $9::boolean,
        filtered_rows = filtered_rows + $10::int8,
        state = 'done', error = NULL, copying_from = NULL, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND committed_lines = $3::int8
        AND generation = $11::int8 AND state <> 'done'";

/// Marks a shard failed with a reason, keeping what it committed. `$1` run, `$2` shard, `$3`
/// error, `$4` md5_ok (nullable), `$5` items seen (nullable).
pub const FAIL_SHARD: &str =
    "UPDATE ferry.shards SET state = 'failed', error = $3::text, md5_ok = $4::boolean,
        items_seen = $5::int8, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND state <> 'done'";

/// Starts a shard over: a new generation with nothing committed, so the rows and rejects of the
/// earlier generations are stale (removed by [`SELECT_STALE_LOADS`]'s cleanup before anything
/// loads again). Conditional on the generation, so it happens once, and, unless `$8` is true, on
/// no chunk being written ahead of its checkpoint (`copying_from IS NULL`): an autocommit COPY in
/// flight could commit its rows after the cleanup looked for them, leaving rows of an ended
/// generation that no later cleanup would look for. The loader that holds the shard passes true
/// (its own chunk is over); `reset` passes true only with `--force` (the user states that no
/// worker is alive). The mark and the restart are single-row updates of one row, so one of them
/// comes first: a restart after the mark is refused, a mark after the restart finds the
/// generation moved and nothing is written. `$1` run, `$2` shard, `$3` the generation being
/// ended, `$4` state (`failed` or `pending`), `$5` error, `$6` md5_ok, `$7` items seen, `$8`
/// over a chunk in flight.
pub const RESTART_SHARD: &str = "UPDATE ferry.shards SET generation = generation + 1,
        committed_lines = 0, loaded_rows = 0, rejected_rows = 0, filtered_rows = 0,
        spilled_values = 0, state = $4::text, error = $5::text, md5_ok = $6::boolean,
        items_seen = $7::int8, copying_from = NULL, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND generation = $3::int8
        AND (copying_from IS NULL OR $8::boolean)";

/// Marks a chunk's rows as being written ahead of its checkpoint (the autocommit path): until the
/// checkpoint moves past it, a loader taking the shard must prove the chunk before writing it.
/// Touches one row only if the checkpoint and generation are as the loader read them.
/// `$1` run, `$2` shard, `$3` committed_lines (the chunk's start), `$4` generation.
pub const MARK_COPYING: &str = "UPDATE ferry.shards SET copying_from = $3::int8, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND committed_lines = $3::int8
        AND generation = $4::int8 AND state <> 'done'";

/// Claims the file identity of a shard's generation (idempotent: the first claim wins).
/// `$1` run, `$2` shard, `$3` generation, `$4` file identity.
pub const CLAIM_LOAD: &str = "INSERT INTO ferry.loads (run_id, shard_id, generation, file_identity)
    VALUES ($1::text, $2::text, $3::int8, $4::text)
    ON CONFLICT (run_id, shard_id, generation) DO NOTHING";

/// A generation's load: `load_id` and the file identity it claimed. `$1` run, `$2` shard,
/// `$3` generation.
pub const SELECT_LOAD: &str = "SELECT load_id, file_identity FROM ferry.loads
    WHERE run_id = $1::text AND shard_id = $2::text AND generation = $3::int8";

/// The run, shard and data file of a load. `$1` load_id.
pub const SELECT_LOAD_OWNER: &str = "SELECT l.run_id, l.shard_id, s.data_key
    FROM ferry.loads l JOIN ferry.shards s ON s.run_id = l.run_id AND s.shard_id = l.shard_id
    WHERE l.load_id = $1::int8";

/// The loads of a shard's earlier generations whose rows were not removed yet. `$1` run,
/// `$2` shard, `$3` the current generation.
pub const SELECT_STALE_LOADS: &str = "SELECT load_id FROM ferry.loads
    WHERE run_id = $1::text AND shard_id = $2::text AND generation < $3::int8 AND NOT cleaned
    ORDER BY load_id";

/// Marks a stale load's rows removed. `$1` load_id.
pub const MARK_LOAD_CLEANED: &str =
    "UPDATE ferry.loads SET cleaned = true WHERE load_id = $1::int8";

/// Removes the rejects an earlier generation of a shard recorded. `$1` run, `$2` shard,
/// `$3` the current generation.
pub const DELETE_STALE_REJECTS: &str = "DELETE FROM ferry.rejects
    WHERE run_id = $1::text AND shard_id = $2::text AND generation < $3::int8";

/// Records rejected lines, idempotently: a retried chunk writes the same rows again. The
/// statement is [`REJECT_INSERT_HEAD`], then one `($n…)` group of six parameters per reject
/// (run, shard, line, reason, raw line, generation), then [`REJECT_INSERT_TAIL`].
pub const REJECT_INSERT_HEAD: &str =
    "INSERT INTO ferry.rejects (run_id, shard_id, line_no, reason, raw_line, generation) VALUES ";

/// See [`REJECT_INSERT_HEAD`].
pub const REJECT_INSERT_TAIL: &str = " ON CONFLICT (run_id, shard_id, line_no) DO UPDATE
    SET reason = EXCLUDED.reason, raw_line = EXCLUDED.raw_line, generation = EXCLUDED.generation";

/// One reject's parameter group in [`REJECT_INSERT_HEAD`], for parameters `$n+1 ..= $n+6`.
pub fn reject_values(n: usize) -> String {
    parameter_group(n, &["text", "text", "int8", "text", "bytea", "int8"])
}

/// A `($n+1::type, $n+2::type, …)` group of a multi-row `INSERT`, one parameter per type.
pub fn parameter_group(n: usize, types: &[&str]) -> String {
    let parameters: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}", n + 1 + i))
        .collect();
    format!("({})", parameters.join(", "))
}

/// Post-load step states.
pub mod step_state {
    /// Started, not known to be finished (a crash, or running now).
    pub const STARTED: &str = "started";
    /// Finished.
    pub const DONE: &str = "done";
}

/// A run's post-load steps as recorded. `$1` run.
pub const SELECT_STEPS: &str = "SELECT step_no, description, state, millis, note FROM ferry.steps
    WHERE run_id = $1::text ORDER BY step_no";

/// Marks a post-load step started. `$1` run, `$2` step, `$3` description.
pub const START_STEP: &str =
    "INSERT INTO ferry.steps (run_id, step_no, description, state, started_at)
    VALUES ($1::text, $2::int8, $3::text, 'started', now())
    ON CONFLICT (run_id, step_no) DO UPDATE SET state = 'started', started_at = now(),
        description = EXCLUDED.description";

/// Marks a post-load step done. `$1` run, `$2` step, `$3` milliseconds, `$4` note (nullable).
pub const FINISH_STEP: &str = "UPDATE ferry.steps SET state = 'done', finished_at = now(),
        millis = $3::int8, note = $4::text
    WHERE run_id = $1::text AND step_no = $2::int8";

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

/// Records a Parquet run's output (idempotent: the first plan wins). `$1` run, `$2` kind,
/// `$3` location, `$4` the dataset's settings as JSON.
pub const INSERT_OUTPUT: &str = "INSERT INTO ferry.outputs (run_id, kind, location, spec_json)
    VALUES ($1::text, $2::text, $3::text, $4::text)
    ON CONFLICT (run_id) DO NOTHING";

/// A run's output, if it has one. `$1` run.
pub const SELECT_OUTPUT: &str =
    "SELECT kind, location, spec_json FROM ferry.outputs WHERE run_id = $1::text";

/// Records a committed Parquet file (idempotent: a retried chunk records the same file).
/// `$1` run, `$2` table, `$3` load, `$4` chunk, `$5` object key, `$6` rows, `$7` bytes.
pub const UPSERT_OUTPUT_FILE: &str = "INSERT INTO ferry.output_files
        (run_id, table_name, load_id, chunk_index, object_key, row_count, byte_count)
    VALUES ($1::text, $2::text, $3::int8, $4::int8, $5::text, $6::int8, $7::int8)
    ON CONFLICT (run_id, table_name, load_id, chunk_index) DO UPDATE
    SET object_key = EXCLUDED.object_key, row_count = EXCLUDED.row_count,
        byte_count = EXCLUDED.byte_count";

/// A run's recorded Parquet files. `$1` run.
pub const SELECT_OUTPUT_FILES: &str = "SELECT table_name, load_id, chunk_index, object_key,
        row_count, byte_count
    FROM ferry.output_files WHERE run_id = $1::text";

/// Forgets the files of a load whose rows were removed. `$1` load.
pub const DELETE_OUTPUT_FILES_OF_LOAD: &str =
    "DELETE FROM ferry.output_files WHERE load_id = $1::int8";

/// The runs whose output is a location: the runs sharing one Parquet dataset (`--append`).
/// `$1` location.
pub const SELECT_RUNS_AT_OUTPUT: &str = "SELECT o.run_id, r.state FROM ferry.outputs o
    JOIN ferry.runs r ON r.run_id = o.run_id
    WHERE o.location = $1::text ORDER BY o.run_id";

/// A run's loads, for telling current files from stale ones. `$1` run.
pub const SELECT_RUN_LOADS: &str =
    "SELECT load_id, shard_id, generation FROM ferry.loads WHERE run_id = $1::text";

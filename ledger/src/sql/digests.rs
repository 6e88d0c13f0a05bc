//! Chunk digests and deep verifications (schema version 7).
//!
//! - `ferry.chunk_digests`: per run, table and provenance (one chunk of one load), the count of
//!   the items the chunk wrote into the table and the sum of their hashes
//!   (`ferry_worker::normal`), written with the chunk's checkpoint: in its transaction on the
//!   transactional paths, just before the conditional move on the others. Idempotent: a chunk
//!   always has the same rows, so a retried chunk writes the same record.
//! - `ferry.verifications`: per run and table, the last deep verification's result.
//!
//! Every statement binds its values as parameters cast in the SQL text, as [`crate::sql`] does.

/// The statements of schema version 7 (idempotent).
pub const MIGRATION: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ferry.chunk_digests (
        run_id TEXT NOT NULL,
        table_name TEXT NOT NULL,
        provenance BIGINT NOT NULL,
        load_id BIGINT NOT NULL,
        items BIGINT NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (run_id, table_name, provenance)
    )",
    "CREATE TABLE IF NOT EXISTS ferry.verifications (
        run_id TEXT NOT NULL,
        table_name TEXT NOT NULL,
        state TEXT NOT NULL,
        sample_per_mille BIGINT NOT NULL,
        rows_read BIGINT NOT NULL,
        chunks BIGINT NOT NULL,
        chunks_differing BIGINT NOT NULL,
        detail TEXT NOT NULL,
        verified_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, table_name)
    )",
];

/// A chunk's digests: [`DIGEST_INSERT_HEAD`], one [`digest_values`] group of six parameters per
/// table (run, table, provenance, load, items, digest), then [`DIGEST_INSERT_TAIL`].
pub const DIGEST_INSERT_HEAD: &str =
    "INSERT INTO ferry.chunk_digests (run_id, table_name, provenance, load_id, items, digest) VALUES ";

/// See [`DIGEST_INSERT_HEAD`].
pub const DIGEST_INSERT_TAIL: &str = " ON CONFLICT (run_id, table_name, provenance) DO UPDATE
    SET load_id = EXCLUDED.load_id, items = EXCLUDED.items, digest = EXCLUDED.digest";

/// One digest's parameter group, for parameters `$n+1 ..= $n+6`.
pub fn digest_values(n: usize) -> String {
    super::parameter_group(n, &["text", "text", "int8", "int8", "int8", "text"])
}

/// A run's chunk digests: table, provenance, load, items, digest. `$1` run.
pub const SELECT_RUN_DIGESTS: &str = "SELECT table_name, provenance, load_id, items, digest
    FROM ferry.chunk_digests WHERE run_id = $1::text";

/// Every load id and the run that claimed it (rows of other runs in a shared table).
pub const SELECT_LOAD_RUNS: &str = "SELECT load_id, run_id FROM ferry.loads";

/// Records a table's verification. `$1` run, `$2` table, `$3` state, `$4` sample (per mille),
/// `$5` rows read, `$6` chunks compared, `$7` chunks differing, `$8` detail.
pub const UPSERT_VERIFICATION: &str = "INSERT INTO ferry.verifications
    (run_id, table_name, state, sample_per_mille, rows_read, chunks, chunks_differing, detail)
    VALUES ($1::text, $2::text, $3::text, $4::int8, $5::int8, $6::int8, $7::int8, $8::text)
    ON CONFLICT (run_id, table_name) DO UPDATE SET state = EXCLUDED.state,
        sample_per_mille = EXCLUDED.sample_per_mille, rows_read = EXCLUDED.rows_read,
        chunks = EXCLUDED.chunks, chunks_differing = EXCLUDED.chunks_differing,
        detail = EXCLUDED.detail, verified_at = now()";

/// A run's verifications, by table. `$1` run.
pub const SELECT_VERIFICATIONS: &str = "SELECT table_name, state, sample_per_mille, rows_read,
    chunks, chunks_differing, detail FROM ferry.verifications WHERE run_id = $1::text
    ORDER BY table_name";

//! Ferry's configuration: one TOML file plus `FERRY_*` environment variables.
//!
//! Every scalar key can be overridden from the environment with its section and key joined by `__`:
//! `FERRY_LOAD__CHUNK_LINES=50000`, `FERRY_MAPPING__OVERFLOW_COLUMN=extra`. Lists (the key
//! attributes) live in the file or on the command line. Other `FERRY_*` variables (`FERRY_LOG`,
//! `FERRY_FAILPOINTS`) are not configuration and are left alone.
//!
//! The file is parsed into [`RawConfig`] (unknown keys are errors) and validated, without IO, into
//! [`Settings`].
//!
//! ```toml
//! version = 1
//! [load]
//! chunk_lines = 100000   # lines per transaction; fixed per run, recorded in the ledger
//! max_rejects = 0        # the run fails when more lines than this are rejected
//! workers = 3            # shards loaded at once (default: cores + 1 on PostgreSQL, 2 on HeliosDB)
//! [mapping]
//! key = ["PK", "SK"]     # or --key PK,SK (optionally typed: PK:S,SK:N)
//! overflow_column = "attrs"
//! ```

use std::collections::HashMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::Path;

use serde::Deserialize;

use crate::schema::{DdbType, NestedJson, OnTypeMismatch};
use crate::{Error, Result};

/// The configuration sections, which are also the accepted `FERRY_<SECTION>__<KEY>` prefixes.
const SECTIONS: &[&str] = &[
    "load", "mapping", "target", "aws", "queue", "metrics", "parquet", "probe",
];

/// The configuration as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version of the file; 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Loading.
    #[serde(default)]
    pub load: RawLoad,
    /// Mapping DynamoDB items to rows.
    #[serde(default)]
    pub mapping: RawMapping,
    /// The target database.
    #[serde(default)]
    pub target: RawTarget,
    /// AWS clients (S3 and SQS).
    #[serde(default)]
    pub aws: RawAws,
    /// The SQS shard queue of the fleet.
    #[serde(default)]
    pub queue: RawQueue,
    /// Prometheus metrics of `ferry-worker` and `migrate`.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// A Parquet dataset as the run's target (the ledger stays in the database).
    #[serde(default)]
    pub parquet: RawParquet,
    /// What `ferry-coordinator probe` measures, and how much.
    #[serde(default)]
    pub probe: RawProbe,
    /// Single-table design: routing rules (see [`crate::schema::routing`]).
    #[serde(default)]
    pub routing: crate::schema::routing::Routing,
    /// SQL that `plan` runs, in order, before anything loads (the target tables' DDL).
    #[serde(default)]
    pub setup: Vec<SqlStep>,
    /// Steps that `finalize` runs, in order, once every shard reconciled (indexes, key linking,
    /// constraints): SQL statements or Ferry's own key linking.
    #[serde(default)]
    pub post_load: Vec<PostLoadStep>,
    /// Queries `verify` (and `finalize`) run; their results go into the report.
    #[serde(default)]
    pub verify: Vec<VerifyQuery>,
}

/// One SQL statement of `[[setup]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlStep {
    /// The statement (no parameters: these are the user's own DDL and DML).
    pub sql: String,
    /// Run it only on this target: `postgres` or `heliosdb` (default: both).
    #[serde(default)]
    pub only_on: Option<TargetName>,
}

/// One `[[post_load]]` step: a SQL statement, or a foreign-key link Ferry computes itself.
///
/// ```toml
/// [[post_load]]
/// sql = "CREATE INDEX IF NOT EXISTS idx_orders_status ON orders(status)"
///
/// # orders.user_id := users.id where orders.user_pk = users.dynamo_pk (rows still NULL only)
/// [[post_load]]
/// link = { table = "orders", column = "user_id", from_table = "users", from_column = "id", match = [["user_pk", "dynamo_pk"]] }
/// ```
///
/// Each step's completion is recorded in the ledger (`ferry.steps`), so a `finalize` after a
/// crash resumes at the first step not done.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostLoadStep {
    /// The statement (no parameters: the user's own DDL and DML).
    #[serde(default)]
    pub sql: Option<String>,
    /// A foreign-key link (see [`LinkStep`]).
    #[serde(default)]
    pub link: Option<LinkStep>,
    /// Run it only on this target: `postgres` or `heliosdb` (default: both).
    #[serde(default)]
    pub only_on: Option<TargetName>,
}

/// Sets `table.column` to `from_table.from_column` of the row whose `match` columns equal the
/// row's, for every row where `column` is NULL. PostgreSQL runs it as `UPDATE … FROM`; on HeliosDB
/// (no `UPDATE … FROM`, and correlated subqueries run row by row) Ferry reads the mapping, computes
/// each row's value and writes it by key. Rows without a counterpart (orphans) stay NULL and are
/// counted and named in the step's report line; nothing is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkStep {
    /// The table whose column is filled.
    pub table: String,
    /// The column filled.
    pub column: String,
    /// The table the values come from.
    pub from_table: String,
    /// The column whose value is written.
    pub from_column: String,
    /// Pairs `[column of table, column of from_table]` that must be equal.
    #[serde(rename = "match")]
    pub on: Vec<[String; 2]>,
}

impl PostLoadStep {
    /// The step in words (one line), as recorded in the ledger and shown in the report.
    pub fn describe(&self) -> String {
        match (&self.sql, &self.link) {
            (Some(sql), _) => sql.split_whitespace().collect::<Vec<_>>().join(" "),
            (None, Some(link)) => {
                let on: Vec<String> = link
                    .on
                    .iter()
                    .map(|[a, b]| format!("{}.{a} = {}.{b}", link.table, link.from_table))
                    .collect();
                format!(
                    "link {}.{} := {}.{} where {}",
                    link.table,
                    link.column,
                    link.from_table,
                    link.from_column,
                    on.join(" and ")
                )
            }
            (None, None) => String::new(),
        }
    }

    fn validate(&self, index: usize) -> Result<()> {
        let error = |reason: &str| Err(Error::Config(format!("post_load[{index}]: {reason}")));
        match (&self.sql, &self.link) {
            (Some(_), None) => Ok(()),
            (None, Some(link)) => {
                let names = [
                    &link.table,
                    &link.column,
                    &link.from_table,
                    &link.from_column,
                ];
                if names.iter().any(|n| !crate::ident::is_valid_column_name(n)) {
                    return error("link: table and column names must be 1 to 63 bytes");
                }
                if link.on.is_empty() {
                    return error("link: match needs at least one [column, from_column] pair");
                }
                if link
                    .on
                    .iter()
                    .flatten()
                    .any(|n| !crate::ident::is_valid_column_name(n))
                {
                    return error("link: match column names must be 1 to 63 bytes");
                }
                Ok(())
            }
            _ => error("give exactly one of sql or link"),
        }
    }
}

/// One `[[verify]]` query.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// Its name in the report.
    pub name: String,
    /// The query.
    pub sql: String,
    /// A row in the result is a problem (an orphan, a duplicate): the run is not verified.
    #[serde(default)]
    pub expect_empty: bool,
    /// Run it only on this target.
    #[serde(default)]
    pub only_on: Option<TargetName>,
}

/// A target kind named in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetName {
    /// PostgreSQL.
    Postgres,
    /// HeliosDB.
    Heliosdb,
}

/// `[aws]`: how the S3 and SQS clients are made. Credentials and the region come from the standard
/// AWS chain (environment, shared profiles, web identity, SSO, container and instance metadata),
/// never from this file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAws {
    /// An endpoint for S3-compatible stores and local endpoints (`http://127.0.0.1:5000`). The
    /// standard `AWS_ENDPOINT_URL` variables work too.
    pub endpoint_url: Option<String>,
    /// The region, when the AWS chain has none (default `us-east-1`).
    pub region: Option<String>,
    /// Path-style S3 addressing (`endpoint/bucket/key`); default: on when `endpoint_url` is set.
    pub force_path_style: Option<bool>,
    /// Attempts per AWS request, retries with backoff included (default 5).
    pub max_attempts: Option<u32>,
}

/// `[metrics]`: Prometheus metrics of the loading processes (`ferry-worker`, `migrate`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Serve `GET /metrics` on this address while loading (`0.0.0.0:9464`); default: not served.
    pub addr: Option<String>,
    /// Push the final values to this Pushgateway when the process ends (`http://pushgateway:9091`).
    pub pushgateway_url: Option<String>,
    /// The Pushgateway `job` label (default: `ferry-worker`, or `ferry-migrate` for `migrate`).
    pub job: Option<String>,
    /// The Pushgateway `instance` label (default: `$HOSTNAME`, a pod's name, else host-pid).
    pub instance: Option<String>,
}

/// Validated `[metrics]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where `/metrics` is served, if anywhere.
    pub addr: Option<std::net::SocketAddr>,
    /// The Pushgateway pushed to at exit, if any.
    pub pushgateway_url: Option<String>,
    /// The `job` label of the push.
    pub job: Option<String>,
    /// The `instance` label of the push.
    pub instance: Option<String>,
}

fn metrics_settings(metrics: RawMetrics) -> Result<MetricsSettings> {
    let addr = match metrics.addr.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(addr) => Some(addr.parse().map_err(|_| {
            Error::Config(format!(
                "metrics.addr {addr:?} is not a listen address (host:port, e.g. 0.0.0.0:9464)"
            ))
        })?),
    };
    let pushgateway_url = metrics.pushgateway_url.filter(|u| !u.trim().is_empty());
    if let Some(url) = &pushgateway_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "metrics.pushgateway_url {:?} must start with http:// or https://",
                crate::redact::url(url)
            )));
        }
    }
    Ok(MetricsSettings {
        addr,
        pushgateway_url,
        job: metrics.job.filter(|j| !j.is_empty()),
        instance: metrics.instance.filter(|i| !i.is_empty()),
    })
}

/// `[parquet]`: a run whose target is a Parquet dataset instead of a database table (`--parquet`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawParquet {
    /// Where the dataset goes: a local folder or `s3://bucket/prefix/`; set, it makes the run a
    /// Parquet run, whose ledger lives in the `[target]` database (the embedded HeliosDB by
    /// default).
    pub location: Option<String>,
    /// `zstd` (default) or `snappy`.
    pub compression: ParquetCompression,
    /// The most rows in one row group (a file holds one chunk, `load.chunk_lines` lines).
    pub row_group_rows: usize,
}

impl Default for RawParquet {
    fn default() -> Self {
        RawParquet {
            location: None,
            compression: ParquetCompression::Zstd,
            row_group_rows: 1_048_576,
        }
    }
}

/// The compression codec of Parquet files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    /// zstd (level 3): the smaller files.
    #[default]
    Zstd,
    /// snappy: faster, read by everything.
    Snappy,
}

/// Validated `[parquet]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParquetSettings {
    /// The dataset's location, when the run writes Parquet.
    pub location: Option<String>,
    /// The codec.
    pub compression: ParquetCompression,
    /// Rows per row group, at most.
    pub row_group_rows: NonZeroUsize,
}

/// `[probe]`: what `ferry-coordinator probe` measures, and how much (the measurements `plan
/// --dry-run` estimates from).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProbe {
    /// The target's ceiling is measured through 1, 2, 4, … parallel COPY connections, up to this.
    pub max_connections: usize,
    /// Synthetic rows copied at each level (split between its connections).
    pub rows: u64,
    /// A level starts no further COPY after this many seconds (a slow target stays bounded).
    pub level_seconds: u64,
    /// Lines the decode rate is measured on (synthetic, or the export's first lines).
    pub decode_items: usize,
    /// Stored bytes of the export's data files read for the source read rate (`--export`).
    pub read_bytes: u64,
    /// Bytes of JSON per synthetic line, without `--export` (with it: the export's own width).
    pub line_bytes: usize,
}

impl Default for RawProbe {
    fn default() -> Self {
        RawProbe {
            max_connections: 4,
            rows: 200_000,
            level_seconds: 30,
            decode_items: 50_000,
            read_bytes: 64 * 1024 * 1024,
            line_bytes: 300,
        }
    }
}

/// Validated `[probe]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// The most parallel COPY connections the ceiling is measured through.
    pub max_connections: NonZeroUsize,
    /// Rows copied per level.
    pub rows: NonZeroU64,
    /// Seconds after which a level starts no further COPY.
    pub level_seconds: std::time::Duration,
    /// Lines decoded for the decode rate.
    pub decode_items: NonZeroUsize,
    /// Stored bytes read for the source rate.
    pub read_bytes: NonZeroU64,
    /// JSON bytes per synthetic line.
    pub line_bytes: usize,
}

fn probe_settings(probe: &RawProbe) -> Result<ProbeSettings> {
    let nonzero = |value: u64, key: &str| {
        NonZeroU64::new(value)
            .ok_or_else(|| Error::Config(format!("{key} must be a positive number")))
    };
    if probe.max_connections > 64 {
        return Err(Error::Config(
            "probe.max_connections must be between 1 and 64".into(),
        ));
    }
    Ok(ProbeSettings {
        max_connections: NonZeroUsize::new(probe.max_connections).ok_or_else(|| {
            Error::Config("probe.max_connections must be between 1 and 64".into())
        })?,
        rows: nonzero(probe.rows, "probe.rows")?,
        level_seconds: std::time::Duration::from_secs(
            nonzero(probe.level_seconds, "probe.level_seconds")?.get(),
        ),
        decode_items: NonZeroUsize::new(probe.decode_items)
            .ok_or_else(|| Error::Config("probe.decode_items must be a positive number".into()))?,
        read_bytes: nonzero(probe.read_bytes, "probe.read_bytes")?,
        line_bytes: probe.line_bytes.min(64 * 1024),
    })
}

/// `[queue]`: the SQS queue shards travel on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    /// The queue's URL (`ferry-coordinator queue create` prints it).
    pub url: Option<String>,
    /// Seconds a received shard stays invisible to other workers; the heartbeat renews it. A shard
    /// found in another worker's hands is also looked at again after this long.
    pub visibility_timeout_secs: u32,
    /// Seconds between visibility renewals of a held shard; 0 turns renewal off.
    pub heartbeat_secs: u32,
    /// Long-poll wait per ReceiveMessage call (0 to 20 seconds).
    pub wait_secs: u32,
    /// Seconds before a shard that failed here is offered again (each offer counts towards the
    /// dead-letter queue's `max_receive_count`).
    pub retry_delay_secs: u32,
    /// Receives of one shard before SQS moves it to the dead-letter queue (`queue create`).
    pub max_receive_count: u32,
    /// A worker exits after the queue has been empty this long (a Kubernetes or Batch job).
    pub idle_exit_secs: u64,
    /// Keep polling when the queue is empty instead of exiting (a long-running Deployment).
    pub poll_forever: bool,
}

impl Default for RawQueue {
    fn default() -> Self {
        RawQueue {
            url: None,
            visibility_timeout_secs: 300,
            heartbeat_secs: 60,
            wait_secs: 20,
            retry_delay_secs: 30,
            max_receive_count: 5,
            idle_exit_secs: 60,
            poll_forever: false,
        }
    }
}

const fn default_version() -> u32 {
    1
}

/// `[load]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLoad {
    /// Input lines per committed chunk (one transaction). Fixed per run.
    pub chunk_lines: u64,
    /// Lines per decode block (the unit of rayon parallelism).
    pub block_lines: usize,
    /// Decoded blocks in flight per shard (bounds memory).
    pub pipeline_depth: usize,
    /// Rejected lines tolerated before the run fails.
    pub max_rejects: u64,
    /// Shards loaded at once (default: per target, see [`LoadSettings::workers_for`]).
    pub workers: Option<usize>,
    /// Connection attempts before a worker gives up on the target.
    pub connect_attempts: u32,
    /// `auto` (binary COPY on PostgreSQL, CSV COPY on HeliosDB), `binary`, `csv` or `insert`.
    pub copy_format: CopyFormat,
    /// Items per second one worker decodes and encodes, for `plan --dry-run`'s estimate when
    /// neither an earlier run nor a probe in the target's ledger measured it (measured: about
    /// 50,000 on PostgreSQL for a 25-column table; see the README's benchmark).
    pub estimate_items_per_second: u64,
    /// Cores each worker decodes with: a probe measures decoding per core, a worker's rate is that
    /// times this (`plan --dry-run`).
    pub estimate_cores_per_worker: u64,
    /// Stored (gzip) bytes per second one worker reads from S3, when no probe measured it
    /// (`plan --dry-run`).
    pub estimate_source_bytes_per_second: u64,
    /// Items per second the target ingests with every worker together (its ceiling), when no
    /// probe measured it (`plan --dry-run`).
    pub estimate_target_items_per_second: u64,
    /// Seconds a loading connection may await an answer with no byte moving before it is given
    /// up (and its shard's visibility no longer renewed); 0: never.
    pub progress_timeout_secs: u64,
    /// What `ferry.rejects` keeps of a rejected line: `raw` (default), `redacted` (its shape,
    /// every value replaced) or `omitted` (nothing); for tables holding personal data.
    pub reject_lines: RejectLines,
    /// Build the key of a table the run creates after its load instead of during it
    /// (PostgreSQL's transactional paths only; never with `--append` or into an existing table).
    pub defer_key: bool,
    /// Record each chunk's digest of its items with its checkpoint, for `verify --deep`
    /// (every load path but a catch-up window's).
    pub digest: bool,
    /// The statistics target of finalize's `ANALYZE` (1 to 10000); absent: the server's
    /// `default_statistics_target`. `ANALYZE` samples 300 rows per unit, so its cost grows with it.
    pub statistics_target: Option<u32>,
}

/// What the ledger keeps of a rejected line (`load.reject_lines`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectLines {
    /// The line as read.
    #[default]
    Raw,
    /// Its structure, attribute names and types, every value replaced; the reason without the
    /// values it quoted.
    Redacted,
    /// Nothing of the line; the reason without the values it quoted.
    Omitted,
}

/// How rows are sent to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyFormat {
    /// The fastest format the detected server supports.
    #[default]
    Auto,
    /// Binary COPY inside the checkpoint transaction (PostgreSQL).
    Binary,
    /// CSV COPY over the simple protocol in autocommit, with the presence-checked checkpoint
    /// (HeliosDB; works on PostgreSQL too).
    Csv,
    /// Multi-row INSERTs with text parameters in the checkpoint's transaction: the last resort,
    /// for a server without a usable COPY.
    Insert,
}

impl Default for RawLoad {
    fn default() -> Self {
        RawLoad {
            chunk_lines: 100_000,
            block_lines: 4_096,
            pipeline_depth: 4,
            max_rejects: 0,
            workers: None,
            connect_attempts: 5,
            copy_format: CopyFormat::Auto,
            estimate_items_per_second: 50_000,
            estimate_cores_per_worker: 1,
            estimate_source_bytes_per_second: 50_000_000,
            estimate_target_items_per_second: 150_000,
            progress_timeout_secs: 300,
            reject_lines: RejectLines::Raw,
            defer_key: true,
            digest: true,
            statistics_target: None,
        }
    }
}

/// `[mapping]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMapping {
    /// Key attributes, `name` or `name:TYPE` (S, N or B).
    pub key: Vec<String>,
    /// Target table (default: the export's table name).
    pub table: Option<String>,
    /// The JSONB column for attributes without a typed column.
    pub overflow_column: String,
    /// `plain` or `dynamodb`.
    pub nested_json: NestedJson,
    /// `overflow` or `reject`.
    pub on_type_mismatch: OnTypeMismatch,
    /// Items read for schema inference.
    pub sample_items: usize,
    /// Attributes present in fewer than this fraction of sampled items go to overflow.
    pub min_presence: f64,
}

impl Default for RawMapping {
    fn default() -> Self {
        RawMapping {
            key: Vec::new(),
            table: None,
            overflow_column: "attrs".into(),
            nested_json: NestedJson::Plain,
            on_type_mismatch: OnTypeMismatch::Overflow,
            sample_items: 10_000,
            min_presence: 0.1,
        }
    }
}

/// `[target]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTarget {
    /// `postgres://user@host:port/db` (the password may come from `PGPASSWORD`). Without one,
    /// `migrate` starts its own HeliosDB (the embedded default).
    pub url: Option<String>,
    /// The embedded HeliosDB's data folder (default `./ferry-data`).
    pub data_dir: Option<String>,
    /// The `heliosdb-nano` binary for the embedded default (default: `$FERRY_HELIOSDB_BIN`, the
    /// install cache `~/.cache/ferry/heliosdb-<version>/bin`, then `PATH`).
    pub heliosdb_bin: Option<String>,
    /// The embedded HeliosDB's port (default: a free one).
    pub port: Option<u16>,
    /// TLS: `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`; the URL's
    /// `sslmode` wins.
    pub sslmode: Option<String>,
    /// Root certificates for `verify-ca`/`verify-full` (a PEM file, or `system`); the URL's
    /// `sslrootcert` wins.
    pub sslrootcert: Option<String>,
    /// A client certificate (PEM); the URL's `sslcert` wins.
    pub sslcert: Option<String>,
    /// The client certificate's key (PEM); the URL's `sslkey` wins.
    pub sslkey: Option<String>,
    /// A file holding the password (a mounted Secret), when the URL has none. Then come
    /// `PGPASSWORD` and the password file (`PGPASSFILE`, `~/.pgpass`).
    pub password_file: Option<String>,
    /// Send the password in cleartext over an unencrypted connection to a server on another
    /// machine when it asks for it (default false: refused).
    pub allow_cleartext_password: bool,
    /// Seconds to connect and authenticate, per host (default 10; the URL's `connect_timeout`
    /// wins).
    pub connect_timeout_secs: Option<u64>,
    /// Seconds of idle before TCP keepalive probes start (default 30; 0: off).
    pub keepalive_secs: Option<u64>,
    /// `statement_timeout` of plan, finalize and status connections, whose statements (setup,
    /// post-load, verify) may run long (default 0: the server's own).
    pub statement_timeout_secs: u64,
}

/// Validated `[target]` connection settings (the embedded server's are in [`EmbeddedSettings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSettings {
    /// `sslmode`, when configured.
    pub sslmode: Option<String>,
    /// `sslrootcert`, when configured.
    pub sslrootcert: Option<String>,
    /// `sslcert`, when configured.
    pub sslcert: Option<std::path::PathBuf>,
    /// `sslkey`, when configured.
    pub sslkey: Option<std::path::PathBuf>,
    /// The password file, when configured.
    pub password_file: Option<std::path::PathBuf>,
    /// Whether a cleartext password may cross an unencrypted connection to another machine.
    pub allow_cleartext_password: bool,
    /// Connect and authenticate timeout per host.
    pub connect_timeout: std::time::Duration,
    /// TCP keepalive idle time (zero: off).
    pub keepalive: std::time::Duration,
    /// `statement_timeout` of the connections that do not load.
    pub statement_timeout: Option<std::time::Duration>,
}

fn target_settings(target: &RawTarget) -> Result<TargetSettings> {
    use std::time::Duration;
    const MODES: &[&str] = &[
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    if let Some(mode) = &target.sslmode {
        if !MODES.contains(&mode.as_str()) {
            return Err(Error::Config(format!(
                "target.sslmode {mode:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )));
        }
    }
    if target.sslcert.is_some() != target.sslkey.is_some() {
        return Err(Error::Config(
            "target.sslcert and target.sslkey go together".into(),
        ));
    }
    let connect_timeout = target.connect_timeout_secs.unwrap_or(10);
    positive(connect_timeout, "target.connect_timeout_secs")?;
    let non_empty = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    Ok(TargetSettings {
        sslmode: target.sslmode.clone(),
        sslrootcert: non_empty(&target.sslrootcert),
        sslcert: non_empty(&target.sslcert).map(Into::into),
        sslkey: non_empty(&target.sslkey).map(Into::into),
        password_file: non_empty(&target.password_file).map(Into::into),
        allow_cleartext_password: target.allow_cleartext_password,
        connect_timeout: Duration::from_secs(connect_timeout),
        keepalive: Duration::from_secs(target.keepalive_secs.unwrap_or(30)),
        statement_timeout: (target.statement_timeout_secs > 0)
            .then(|| Duration::from_secs(target.statement_timeout_secs)),
    })
}

/// A key attribute with an optional declared type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAttribute {
    /// Attribute name.
    pub name: String,
    /// Declared type, if given (`pk:S`).
    pub ddb_type: Option<DdbType>,
}

impl KeyAttribute {
    /// Parses `name` or `name:TYPE`.
    pub fn parse(spec: &str) -> Result<KeyAttribute> {
        let spec = spec.trim();
        let (name, ddb_type) = match spec.rsplit_once(':') {
            Some((name, ty)) if matches!(ty, "S" | "N" | "B") => {
                (name, DdbType::from_descriptor(ty))
            }
            Some((_, ty)) if ty.chars().all(|c| c.is_ascii_uppercase()) && !ty.is_empty() => {
                return Err(Error::Config(format!(
                    "key {spec:?}: type {ty:?} cannot be a key type (use S, N or B)"
                )))
            }
            _ => (spec, None),
        };
        if name.is_empty() {
            return Err(Error::Config(format!(
                "key {spec:?} has an empty attribute name"
            )));
        }
        Ok(KeyAttribute {
            name: name.to_string(),
            ddb_type,
        })
    }

    /// Parses a comma-separated list (`pk,sk` or `pk:S,sk:N`).
    pub fn parse_list(specs: &str) -> Result<Vec<KeyAttribute>> {
        specs
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(KeyAttribute::parse)
            .collect()
    }
}

/// Validated loading settings.
#[derive(Clone, Debug)]
pub struct LoadSettings {
    /// Input lines per committed chunk.
    pub chunk_lines: NonZeroU64,
    /// Lines per decode block.
    pub block_lines: NonZeroUsize,
    /// Blocks in flight per shard.
    pub pipeline_depth: NonZeroUsize,
    /// Rejects tolerated.
    pub max_rejects: u64,
    /// Concurrent shard loaders, when configured.
    pub workers: Option<NonZeroUsize>,
    /// Connection attempts.
    pub connect_attempts: u32,
    /// COPY format.
    pub copy_format: CopyFormat,
    /// Items per second per worker, for estimates.
    pub estimate_items_per_second: u64,
    /// Cores per worker, for estimates from a measured decode rate per core.
    pub estimate_cores_per_worker: u64,
    /// Stored bytes per second one worker reads, for estimates.
    pub estimate_source_bytes_per_second: u64,
    /// The target's ingest ceiling in items per second, for estimates.
    pub estimate_target_items_per_second: u64,
    /// Progress timeout of loading connections; `None`: off.
    pub progress_timeout: Option<std::time::Duration>,
    /// What the ledger keeps of a rejected line.
    pub reject_lines: RejectLines,
    /// Whether a table the run creates gets its key after the load (`load.defer_key`).
    pub defer_key: bool,
    /// Whether each chunk's digest is recorded (`load.digest`).
    pub digest: bool,
    /// The statistics target of finalize's `ANALYZE` (`load.statistics_target`).
    pub statistics_target: Option<u32>,
}

impl LoadSettings {
    /// Concurrent shard loaders: as configured, else a default measured per target with
    /// `ferry-bench`. PostgreSQL gains from one more loader than cores (the database, not
    /// decoding, is the bottleneck, and a loader waiting on a commit leaves its core to others);
    /// HeliosDB gains nothing from concurrent COPYs, so two (one loading while one decodes).
    pub fn workers_for(&self, concurrent_copy_helps: bool) -> usize {
        match self.workers {
            Some(workers) => workers.get(),
            None if concurrent_copy_helps => std::thread::available_parallelism()
                .map(|n| n.get() + 1)
                .unwrap_or(3),
            None => 2,
        }
    }
}

/// Validated mapping settings.
#[derive(Clone, Debug)]
pub struct MappingSettings {
    /// Key attributes (may be empty here; the CLI can supply them).
    pub key: Vec<KeyAttribute>,
    /// Target table override.
    pub table: Option<String>,
    /// Overflow column name.
    pub overflow_column: String,
    /// Nested JSON style.
    pub nested_json: NestedJson,
    /// Type mismatch policy.
    pub on_type_mismatch: OnTypeMismatch,
    /// Sample size for inference.
    pub sample_items: usize,
    /// Presence threshold for a typed column.
    pub min_presence: f64,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `[load]`
    pub load: LoadSettings,
    /// `[mapping]`
    pub mapping: MappingSettings,
    /// `[target] url`
    pub target_url: Option<String>,
    /// `[target]` settings of the embedded default.
    pub embedded: EmbeddedSettings,
    /// `[target]` connection settings (TLS, password, timeouts).
    pub target: TargetSettings,
    /// AWS clients.
    pub aws: AwsSettings,
    /// The SQS queue.
    pub queue: QueueSettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
    /// The Parquet target, when the run writes one.
    pub parquet: ParquetSettings,
    /// What `probe` measures.
    pub probe: ProbeSettings,
    /// Routing rules (empty: one table per export).
    pub routing: crate::schema::routing::Routing,
    /// `[[setup]]` statements.
    pub setup: Vec<SqlStep>,
    /// `[[post_load]]` steps.
    pub post_load: Vec<PostLoadStep>,
    /// `[[verify]]` queries.
    pub verify: Vec<VerifyQuery>,
}

/// Validated `[aws]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// Endpoint override.
    pub endpoint_url: Option<String>,
    /// Region override.
    pub region: Option<String>,
    /// Path-style S3 addressing.
    pub force_path_style: bool,
    /// Attempts per request.
    pub max_attempts: u32,
}

/// Validated `[queue]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// The queue URL, if configured.
    pub url: Option<String>,
    /// Visibility of a received shard.
    pub visibility_timeout: std::time::Duration,
    /// Renewal period of a held shard's visibility; `None` when off.
    pub heartbeat: Option<std::time::Duration>,
    /// Long-poll wait.
    pub wait: std::time::Duration,
    /// Delay before a failed shard is offered again.
    pub retry_delay: std::time::Duration,
    /// Receives before the dead-letter queue.
    pub max_receive_count: u32,
    /// Idle time before a worker exits.
    pub idle_exit: std::time::Duration,
    /// Never exit on an empty queue.
    pub poll_forever: bool,
}

/// Where and how the embedded HeliosDB runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedSettings {
    /// Data folder.
    pub data_dir: std::path::PathBuf,
    /// Binary, when configured.
    pub heliosdb_bin: Option<std::path::PathBuf>,
    /// Port, when configured.
    pub port: Option<u16>,
}

impl Default for Settings {
    fn default() -> Self {
        RawConfig {
            version: 1,
            load: RawLoad::default(),
            mapping: RawMapping::default(),
            target: RawTarget::default(),
            aws: RawAws::default(),
            queue: RawQueue::default(),
            metrics: RawMetrics::default(),
            parquet: RawParquet::default(),
            probe: RawProbe::default(),
            routing: Default::default(),
            setup: Vec::new(),
            post_load: Vec::new(),
            verify: Vec::new(),
        }
        .validate_and_build()
        .expect("the defaults are valid")
    }
}

fn positive<T: TryInto<u64> + Copy>(value: T, key: &str) -> Result<()> {
    match value.try_into() {
        Ok(0) | Err(_) => Err(Error::Config(format!("{key} must be a positive number"))),
        Ok(_) => Ok(()),
    }
}

impl RawConfig {
    /// Checks every value and builds the settings. Does no IO.
    pub fn validate_and_build(self) -> Result<Settings> {
        if self.version != 1 {
            return Err(Error::Config(format!(
                "version {} is not supported (expected 1)",
                self.version
            )));
        }
        let load = self.load;
        positive(load.chunk_lines, "load.chunk_lines")?;
        positive(
            load.estimate_items_per_second,
            "load.estimate_items_per_second",
        )?;
        positive(
            load.estimate_cores_per_worker,
            "load.estimate_cores_per_worker",
        )?;
        positive(
            load.estimate_source_bytes_per_second,
            "load.estimate_source_bytes_per_second",
        )?;
        positive(
            load.estimate_target_items_per_second,
            "load.estimate_target_items_per_second",
        )?;
        let probe = probe_settings(&self.probe)?;
        positive(load.block_lines as u64, "load.block_lines")?;
        positive(load.pipeline_depth as u64, "load.pipeline_depth")?;
        if let Some(workers) = load.workers {
            positive(workers as u64, "load.workers")?;
        }
        let mapping = self.mapping;
        if !crate::ident::is_valid_column_name(&mapping.overflow_column) {
            return Err(Error::Config(format!(
                "mapping.overflow_column {:?} is not a usable column name (1 to 63 bytes)",
                mapping.overflow_column
            )));
        }
        if load
            .statistics_target
            .is_some_and(|t| !(1..=10_000).contains(&t))
        {
            return Err(Error::Config(
                "load.statistics_target must be between 1 and 10000 (PostgreSQL's range)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&mapping.min_presence) {
            return Err(Error::Config(
                "mapping.min_presence must be between 0 and 1".into(),
            ));
        }
        let key = mapping
            .key
            .iter()
            .map(|k| KeyAttribute::parse(k))
            .collect::<Result<Vec<_>>>()?;
        for (index, step) in self.post_load.iter().enumerate() {
            step.validate(index)?;
        }
        if self.routing.is_enabled() && !key.is_empty() {
            let names: Vec<String> = key.iter().map(|k| k.name.clone()).collect();
            self.routing.validate(&names)?;
        }
        Ok(Settings {
            load: LoadSettings {
                chunk_lines: NonZeroU64::new(load.chunk_lines).expect("checked"),
                block_lines: NonZeroUsize::new(load.block_lines).expect("checked"),
                pipeline_depth: NonZeroUsize::new(load.pipeline_depth).expect("checked"),
                max_rejects: load.max_rejects,
                workers: load.workers.and_then(NonZeroUsize::new),
                connect_attempts: load.connect_attempts.max(1),
                copy_format: load.copy_format,
                estimate_items_per_second: load.estimate_items_per_second,
                estimate_cores_per_worker: load.estimate_cores_per_worker,
                estimate_source_bytes_per_second: load.estimate_source_bytes_per_second,
                estimate_target_items_per_second: load.estimate_target_items_per_second,
                progress_timeout: (load.progress_timeout_secs > 0)
                    .then(|| std::time::Duration::from_secs(load.progress_timeout_secs)),
                reject_lines: load.reject_lines,
                defer_key: load.defer_key,
                digest: load.digest,
                statistics_target: load.statistics_target,
            },
            mapping: MappingSettings {
                key,
                table: mapping.table,
                overflow_column: mapping.overflow_column,
                nested_json: mapping.nested_json,
                on_type_mismatch: mapping.on_type_mismatch,
                sample_items: mapping.sample_items.max(1),
                min_presence: mapping.min_presence,
            },
            target: target_settings(&self.target)?,
            embedded: EmbeddedSettings {
                data_dir: self
                    .target
                    .data_dir
                    .unwrap_or_else(|| "ferry-data".into())
                    .into(),
                heliosdb_bin: self.target.heliosdb_bin.map(Into::into),
                port: self.target.port,
            },
            target_url: self.target.url,
            aws: AwsSettings {
                force_path_style: self
                    .aws
                    .force_path_style
                    .unwrap_or(self.aws.endpoint_url.is_some()),
                endpoint_url: self.aws.endpoint_url,
                region: self.aws.region,
                max_attempts: self.aws.max_attempts.unwrap_or(5).max(1),
            },
            queue: queue_settings(self.queue)?,
            metrics: metrics_settings(self.metrics)?,
            parquet: ParquetSettings {
                location: self.parquet.location.filter(|l| !l.trim().is_empty()),
                compression: self.parquet.compression,
                row_group_rows: NonZeroUsize::new(self.parquet.row_group_rows).ok_or_else(
                    || Error::Config("parquet.row_group_rows must be a positive number".into()),
                )?,
            },
            probe,
            routing: self.routing,
            setup: self.setup,
            post_load: self.post_load,
            verify: self.verify,
        })
    }
}

fn queue_settings(queue: RawQueue) -> Result<QueueSettings> {
    use std::time::Duration;
    if queue.wait_secs > 20 {
        return Err(Error::Config(
            "queue.wait_secs must be between 0 and 20 (the SQS long-poll limit)".into(),
        ));
    }
    if queue.visibility_timeout_secs == 0 || queue.visibility_timeout_secs > 43_200 {
        return Err(Error::Config(
            "queue.visibility_timeout_secs must be between 1 and 43200 (12 hours, the SQS limit)"
                .into(),
        ));
    }
    if queue.heartbeat_secs >= queue.visibility_timeout_secs {
        return Err(Error::Config(format!(
            "queue.heartbeat_secs ({}) must be shorter than queue.visibility_timeout_secs ({}), or 0 for no renewal",
            queue.heartbeat_secs, queue.visibility_timeout_secs
        )));
    }
    if queue.retry_delay_secs > 43_200 {
        return Err(Error::Config(
            "queue.retry_delay_secs must be at most 43200".into(),
        ));
    }
    positive(queue.max_receive_count, "queue.max_receive_count")?;
    Ok(QueueSettings {
        url: queue.url,
        visibility_timeout: Duration::from_secs(queue.visibility_timeout_secs.into()),
        heartbeat: (queue.heartbeat_secs > 0)
            .then(|| Duration::from_secs(queue.heartbeat_secs.into())),
        wait: Duration::from_secs(queue.wait_secs.into()),
        retry_delay: Duration::from_secs(queue.retry_delay_secs.into()),
        max_receive_count: queue.max_receive_count,
        idle_exit: Duration::from_secs(queue.idle_exit_secs),
        poll_forever: queue.poll_forever,
    })
}

/// Parses TOML text into `T` with the same parser as the config file (for tests and tools).
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| Error::Config(e.to_string()))
}

/// Loads the settings from an optional TOML file and the process environment.
pub fn load_settings(file: Option<&Path>) -> Result<Settings> {
    load_settings_from(file, std::env::vars())
}

/// Loads the settings from an optional TOML file and the given environment (for tests).
pub fn load_settings_from(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(Error::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let overrides: HashMap<String, String> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("FERRY_")?;
            let (section, key) = rest.split_once("__")?;
            let section = section.to_ascii_lowercase();
            SECTIONS
                .contains(&section.as_str())
                .then(|| (format!("FERRY_{}__{}", section, key), value))
        })
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("FERRY")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides)),
    );
    let raw: RawConfig = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| Error::Config(e.to_string()))?;
    raw.validate_and_build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_and_aws_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[queue]\nvisibility_timeout_secs = 30\nheartbeat_secs = 0\nmax_receive_count = 2\n[aws]\nendpoint_url = \"http://127.0.0.1:5000\"\n",
        )
        .unwrap();
        let env = vec![(
            "FERRY_QUEUE__URL".to_string(),
            "http://127.0.0.1:5000/123/q".to_string(),
        )];
        let settings = load_settings_from(Some(&path), env).unwrap();
        assert_eq!(
            settings.queue.url.as_deref(),
            Some("http://127.0.0.1:5000/123/q")
        );
        assert_eq!(settings.queue.visibility_timeout.as_secs(), 30);
        assert_eq!(settings.queue.heartbeat, None);
        assert_eq!(settings.queue.max_receive_count, 2);
        assert!(
            settings.aws.force_path_style,
            "an endpoint implies path-style"
        );
        assert_eq!(settings.aws.max_attempts, 5);
        std::fs::write(
            &path,
            "[queue]\nvisibility_timeout_secs = 30\nheartbeat_secs = 30\n",
        )
        .unwrap();
        let err = load_settings_from(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("queue.heartbeat_secs (30) must be shorter"),
            "{err}"
        );
        std::fs::write(&path, "[queue]\nwait_secs = 21\n").unwrap();
        let err = load_settings_from(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.wait_secs"), "{err}");
    }

    #[test]
    fn the_key_and_statistics_settings_of_the_load() {
        let defaults = load_settings_from(None, Vec::new()).unwrap();
        assert!(defaults.load.defer_key);
        assert!(defaults.load.digest);
        assert_eq!(defaults.load.statistics_target, None);
        let env = vec![
            ("FERRY_LOAD__DEFER_KEY".to_string(), "false".to_string()),
            (
                "FERRY_LOAD__STATISTICS_TARGET".to_string(),
                "30".to_string(),
            ),
        ];
        let settings = load_settings_from(None, env).unwrap();
        assert!(!settings.load.defer_key);
        assert_eq!(settings.load.statistics_target, Some(30));
        let env = vec![("FERRY_LOAD__STATISTICS_TARGET".to_string(), "0".to_string())];
        let err = load_settings_from(None, env).unwrap_err().to_string();
        assert!(err.contains("load.statistics_target"), "{err}");
    }

    #[test]
    fn metrics_section_and_environment() {
        let env = vec![
            (
                "FERRY_METRICS__ADDR".to_string(),
                "0.0.0.0:9464".to_string(),
            ),
            (
                "FERRY_METRICS__PUSHGATEWAY_URL".to_string(),
                "http://pushgateway:9091".to_string(),
            ),
        ];
        let settings = load_settings_from(None, env).unwrap();
        assert_eq!(settings.metrics.addr, Some("0.0.0.0:9464".parse().unwrap()));
        assert_eq!(
            settings.metrics.pushgateway_url.as_deref(),
            Some("http://pushgateway:9091")
        );
        assert_eq!(Settings::default().metrics, MetricsSettings::default());
        let err = load_settings_from(None, vec![("FERRY_METRICS__ADDR".into(), "9464".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.addr"), "{err}");
        let err = load_settings_from(
            None,
            vec![("FERRY_METRICS__PUSHGATEWAY_URL".into(), "gw:9091".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("metrics.pushgateway_url"), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        let settings = Settings::default();
        assert_eq!(settings.load.chunk_lines.get(), 100_000);
        assert_eq!(settings.load.max_rejects, 0);
        assert_eq!(settings.mapping.overflow_column, "attrs");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "version = 1\n[load]\nchunk_lines = 500\nmax_rejects = 3\n[mapping]\nkey = [\"PK:S\", \"SK\"]\nnested_json = \"dynamodb\"\n",
        )
        .unwrap();
        let env = vec![
            ("FERRY_LOAD__CHUNK_LINES".to_string(), "250".to_string()),
            (
                "FERRY_MAPPING__OVERFLOW_COLUMN".to_string(),
                "extra".to_string(),
            ),
            (
                "FERRY_FAILPOINTS".to_string(),
                "after_copy=exit".to_string(),
            ),
            ("FERRY_LOG".to_string(), "debug".to_string()),
        ];
        let settings = load_settings_from(Some(&path), env).unwrap();
        assert_eq!(settings.load.chunk_lines.get(), 250);
        assert_eq!(settings.load.max_rejects, 3);
        assert_eq!(settings.mapping.overflow_column, "extra");
        assert_eq!(settings.mapping.nested_json, NestedJson::Dynamodb);
        assert_eq!(
            settings.mapping.key,
            vec![
                KeyAttribute {
                    name: "PK".into(),
                    ddb_type: Some(DdbType::S)
                },
                KeyAttribute {
                    name: "SK".into(),
                    ddb_type: None
                }
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "[load]\nchunk_lnes = 5\n").unwrap();
        let err = load_settings_from(Some(&path), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("chunk_lnes"), "{err}");
        std::fs::write(&path, "[load]\nchunk_lines = 0\n").unwrap();
        let err = load_settings_from(Some(&path), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("load.chunk_lines"), "{err}");
        let err = load_settings_from(None, vec![("FERRY_LOAD__WORKERS".into(), "many".into())])
            .unwrap_err();
        assert!(err.to_string().contains("workers"), "{err}");
        assert!(load_settings_from(Some(&dir.path().join("missing.toml")), vec![]).is_err());
    }

    #[test]
    fn estimate_and_probe_keys() {
        let defaults = Settings::default();
        assert_eq!(defaults.load.estimate_cores_per_worker, 1);
        assert_eq!(defaults.probe.max_connections.get(), 4);
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let settings = load_settings_from(
            None,
            env(&[
                ("FERRY_LOAD__ESTIMATE_TARGET_ITEMS_PER_SECOND", "2500"),
                ("FERRY_LOAD__ESTIMATE_SOURCE_BYTES_PER_SECOND", "90000000"),
                ("FERRY_LOAD__ESTIMATE_CORES_PER_WORKER", "2"),
                ("FERRY_PROBE__MAX_CONNECTIONS", "8"),
                ("FERRY_PROBE__ROWS", "5000"),
                ("FERRY_PROBE__LEVEL_SECONDS", "9"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.load.estimate_target_items_per_second, 2500);
        assert_eq!(settings.load.estimate_source_bytes_per_second, 90_000_000);
        assert_eq!(settings.load.estimate_cores_per_worker, 2);
        assert_eq!(settings.probe.max_connections.get(), 8);
        assert_eq!(settings.probe.rows.get(), 5000);
        assert_eq!(
            settings.probe.level_seconds,
            std::time::Duration::from_secs(9)
        );
        for (key, value, named) in [
            (
                "FERRY_LOAD__ESTIMATE_TARGET_ITEMS_PER_SECOND",
                "0",
                "load.estimate_target_items_per_second",
            ),
            ("FERRY_PROBE__MAX_CONNECTIONS", "0", "probe.max_connections"),
            (
                "FERRY_PROBE__MAX_CONNECTIONS",
                "65",
                "probe.max_connections",
            ),
            ("FERRY_PROBE__ROWS", "0", "probe.rows"),
        ] {
            let err = load_settings_from(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn key_specs() {
        assert_eq!(
            KeyAttribute::parse_list("pk:S, sk:N").unwrap(),
            vec![
                KeyAttribute {
                    name: "pk".into(),
                    ddb_type: Some(DdbType::S)
                },
                KeyAttribute {
                    name: "sk".into(),
                    ddb_type: Some(DdbType::N)
                }
            ]
        );
        // A colon that is not a type stays in the name.
        assert_eq!(KeyAttribute::parse("a:b").unwrap().name, "a:b");
        assert!(KeyAttribute::parse("pk:SS").is_err());
    }
}

//! Keys built after the load (PostgreSQL): a table the run creates gets its primary key (a routed
//! table its unique key) in one sort once every shard is in, instead of a B-tree kept up row by
//! row by every COPY stream. The ledger's record (`ferry.pending_keys`) says that the key is
//! pending and which run builds it.
//!
//! # Why every item is still loaded exactly once
//! On the transactional paths (binary COPY or INSERT in the chunk's transaction) the key is not
//! what makes a chunk atomic or keeps two loaders from both committing it; the checkpoint is.
//! A chunk's rows, its rejects and `UPDATE ferry.shards SET committed_lines = to WHERE
//! committed_lines = from AND generation = g` commit together or not at all, and the checkpoint
//! must move exactly one row (`ferry_worker::sink::transaction`). Two loaders of one chunk both
//! write their rows, but the second one's checkpoint update waits on the first's row lock and
//! then finds the checkpoint moved (PostgreSQL re-reads the row under READ COMMITTED): it moves
//! nothing and rolls back, rows and all. A crash before COMMIT leaves nothing of the chunk. No
//! presence proof is made on these paths (only autocommit sinks prove chunks, and they never get
//! a deferred key), and rows are removed by provenance, never by key. What the key still does is
//! refuse *other* rows under the same key:
//! - rows from elsewhere: none can be there. The key is deferred only for a table this run
//!   creates (never with `--append`, never into an existing table), and until it is built every
//!   other run, `--append` or catch-up window is refused on the table (plan reads the record);
//! - a key the export holds twice: both rows load; building the key is refused, and the run fails
//!   naming the key and both lines (the chunks come from the rows' provenance; those chunks are
//!   read again to find the lines, [`ferry_worker::reread`]). The key is not added and the run is
//!   not verified, as when such a key was refused during the load.
//!
//! # Building it
//! `finalize` builds the run's pending keys first among its post-load steps, once every shard
//! reconciled (before the config's steps, which may add foreign keys that need it). Each key is
//! one transaction: lock the record (one builder at a time; a builder that died released it with
//! its connection), `ALTER TABLE … ADD PRIMARY KEY …`, mark the record `built`, COMMIT. A crash
//! anywhere before COMMIT leaves the table without its key and the record unbuilt, and the next
//! `finalize` (or `migrate`) builds it again; after COMMIT both are there. The `ALTER TABLE` needs
//! the table to itself: a Ferry loader still writing into it then (every shard is done, so its
//! chunk can never commit: a loader cut off mid-COPY whose connection the server has not noticed
//! dying) is ended; any other session holding the table is waited for, and named.
//!
//! HeliosDB's DDL is not transactional and its autocommit COPY needs the key for its presence
//! proofs: its tables always get their key at creation, as do tables loaded through the CSV path.

use ferry_ledger::key_state;
use ferry_ledger::keys::{self as ledger_keys, PendingKey};
use ferry_ledger::Ledger;
use ferry_ledger::RunRecord;
use ferry_shared::config::RejectLines;
use ferry_shared::failpoint;
use ferry_shared::ident::quote_ident;
use ferry_shared::schema::{TableSchema, PROVENANCE_COLUMN};
use ferry_worker::sink::{describe_key, Key};
use ferry_worker::target::{LoadPath, Target, TargetKind};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use tokio_postgres::Client;

use crate::plan::TableCheck;
use crate::report::PostLoadLine;
use crate::{CoordinatorError, Result};

/// Whether a table a run creates gets its key after the load: `load.defer_key`, PostgreSQL on a
/// transactional load path, and a new run without `--append`.
pub fn defers_key(defer_key: bool, target: &Target, check: TableCheck) -> bool {
    defer_key
        && target.kind == TargetKind::Postgres
        && matches!(
            target.load_path,
            LoadPath::BinaryCopyInTransaction | LoadPath::InsertInTransaction
        )
        && check == TableCheck::NewRunEmpty
}

/// Creates `schema`'s table without its key and records the key as pending for `run_id`, in one
/// transaction. `Ok(false)` when the table was created meanwhile by someone else (nothing
/// changed: the caller checks the table that is there).
pub async fn create_without_key(
    client: &Client,
    schema: &TableSchema,
    constraint: &str,
    run_id: &str,
) -> Result<bool> {
    let create = schema.create_table_sql_without_key();
    let key_sql = schema.add_key_sql(constraint);
    client
        .batch_execute("BEGIN")
        .await
        .map_err(CoordinatorError::db(
            "cannot begin creating the target table",
        ))?;
    let created = async {
        match client.batch_execute(&create).await {
            Ok(()) => {}
            Err(e) if ferry_ledger::runs::is_ddl_race(&e) => return Ok(false),
            Err(e) => return Err(CoordinatorError::db("cannot create the target table")(e)),
        }
        ledger_keys::record_pending_key(client, &schema.table, run_id, &key_sql).await?;
        Ok(true)
    }
    .await;
    end_transaction(
        client,
        matches!(created, Ok(true)),
        "cannot create the target table",
    )
    .await?;
    let created = created?;
    if created {
        tracing::info!(table = %schema.table, run = run_id, "created target table; its key is built after the load");
    }
    Ok(created)
}

/// Ends the transaction the caller began: COMMIT when `commit`, else ROLLBACK.
async fn end_transaction(client: &Client, commit: bool, context: &'static str) -> Result<()> {
    client
        .batch_execute(if commit { "COMMIT" } else { "ROLLBACK" })
        .await
        .map_err(CoordinatorError::db(context))
}

/// For a table without a key over its key columns: `None` when no key of it is pending;
/// `Some(Ok(()))` when it is pending for `run_id` (or for a plan that never reached the ledger,
/// whose key `run_id` takes over); `Some(Err(refusal))` naming the run that builds it otherwise.
pub async fn pending_for(
    client: &Client,
    table: &str,
    run_id: &str,
) -> Result<Option<std::result::Result<(), String>>> {
    let Some(record) = ledger_keys::pending_key(client, table).await? else {
        return Ok(None);
    };
    if record.built() {
        // The record says built, the table has no key: someone dropped it.
        return Ok(None);
    }
    if ledger_keys::adopt_pending_key(client, table, run_id).await? {
        return Ok(Some(Ok(())));
    }
    let failed = match (&record.state[..], &record.error) {
        (key_state::FAILED, Some(error)) => format!(" Its last build failed: {error}"),
        _ => String::new(),
    };
    Ok(Some(Err(format!(
        "table {table:?} has no key yet: run {} created it and builds its key after its load \
         (the key is {}). Finish that run first (`ferry-coordinator migrate` again, or \
         `ferry-coordinator finalize --run-id {}`): until then no other run, `--append` or \
         catch-up loads into the table, since nothing would refuse a key it already holds.{failed}",
        record.run_id, record.state, record.run_id
    ))))
}

/// Builds every key `run` left pending, in table order, each in its own transaction; returns the
/// report's lines and, when a key cannot be built, the problem that stops the post-load steps.
pub async fn build_run_keys(
    client: &Client,
    run: &RunRecord,
    target: &Target,
    aws: &ferry_shared::config::AwsSettings,
    reject_lines: RejectLines,
    show: &(dyn Fn(String) + Sync),
) -> Result<(Vec<PostLoadLine>, Option<String>)> {
    let mut lines = Vec::new();
    let tables = ferry_worker::sink::run_tables(&run.schema);
    for record in ledger_keys::run_keys(client, &run.run_id).await? {
        let key_columns: Vec<String> = tables
            .iter()
            .find(|t| t.table == record.table_name)
            .map(|t| t.key_columns().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let found = KeyCheck {
            target,
            key_columns: &key_columns,
        };
        let step = format!("{} (the key, built after the load)", record.key_sql);
        if record.built() {
            lines.push(PostLoadLine {
                step,
                state: "done earlier".into(),
                seconds: 0.0,
                note: None,
            });
            continue;
        }
        show(format!("building the key of table {:?}", record.table_name));
        let started = Instant::now();
        match build_key(client, &record, &found, show).await? {
            Build::Built => {
                tracing::info!(table = %record.table_name, seconds = started.elapsed().as_secs_f64(), "built the table's key");
                lines.push(PostLoadLine {
                    step,
                    state: "ran".into(),
                    seconds: started.elapsed().as_secs_f64(),
                    note: None,
                })
            }
            Build::AlreadyBuilt => lines.push(PostLoadLine {
                step,
                state: "done earlier".into(),
                seconds: 0.0,
                note: Some("built by another finalize meanwhile".into()),
            }),
            Build::FoundOnTable => {
                tracing::info!(table = %record.table_name, "the table already has its key (added by hand?): recorded as built");
                lines.push(PostLoadLine {
                    step,
                    state: "done earlier".into(),
                    seconds: started.elapsed().as_secs_f64(),
                    note: Some("the table already had a key over the key columns".into()),
                })
            }
            Build::Refused { message, duplicate } => {
                // The server's words quote the key's values (`load.reject_lines`).
                let message =
                    ferry_worker::redact::server_text(&message, reject_lines).into_owned();
                let problem = if duplicate {
                    show(format!(
                        "finding the keys table {:?} holds twice",
                        record.table_name
                    ));
                    let found = name_duplicates(client, run, &record, aws, reject_lines).await?;
                    format!(
                        "table {:?}: its key cannot be built: {found}. Every item was loaded (the \
                         table holds both rows of each such key) but the key was not added, so \
                         the run is not complete. If the table's key has more attributes, load the \
                         export again into a new table with them (`--key`); otherwise remove the \
                         duplicates from the export and load it again",
                        record.table_name
                    )
                } else {
                    format!(
                        "table {:?}: its key cannot be built: {message}; `ferry-coordinator \
                         finalize --run-id {}` builds it again",
                        record.table_name, run.run_id
                    )
                };
                ledger_keys::set_key_state(
                    client,
                    &record.table_name,
                    if duplicate {
                        key_state::FAILED
                    } else {
                        key_state::PENDING
                    },
                    record.builder.as_deref(),
                    Some(&problem),
                )
                .await?;
                tracing::error!(table = %record.table_name, "{problem}");
                lines.push(PostLoadLine {
                    step,
                    state: "failed".into(),
                    seconds: started.elapsed().as_secs_f64(),
                    note: Some(message),
                });
                return Ok((lines, Some(problem)));
            }
        }
    }
    Ok((lines, None))
}

/// How one key's build ended.
enum Build {
    Built,
    AlreadyBuilt,
    /// The server refused a second primary key, and a unique key over the key columns is
    /// there: someone added it by hand before this finalize.
    FoundOnTable,
    /// The server refused it (its words); `duplicate`: for a key the table holds twice.
    Refused {
        message: String,
        duplicate: bool,
    },
}

/// One key: marked `building` by this process (for `status` and the next reader), then in one
/// transaction: the record locked, the key added, the record `built`.
/// What a refused key is checked against: is a unique key over these columns on the table?
struct KeyCheck<'a> {
    target: &'a Target,
    key_columns: &'a [String],
}

impl KeyCheck<'_> {
    async fn on_table(&self, client: &Client, table: &str) -> Result<bool> {
        if self.key_columns.is_empty() {
            return Ok(false);
        }
        let mut wanted: Vec<&str> = self.key_columns.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        let sets = crate::catalog::unique_column_sets(client, table, self.target).await?;
        Ok(sets.iter().any(|set| {
            let mut have: Vec<&str> = set.iter().map(String::as_str).collect();
            have.sort_unstable();
            have == wanted
        }))
    }
}

async fn build_key(
    client: &Client,
    record: &PendingKey,
    found: &KeyCheck<'_>,
    show: &(dyn Fn(String) + Sync),
) -> Result<Build> {
    let builder = format!("{} pid {}", crate::probe::host_name(), std::process::id());
    ledger_keys::set_key_state(
        client,
        &record.table_name,
        key_state::BUILDING,
        Some(&builder),
        None,
    )
    .await?;
    client
        .batch_execute("BEGIN")
        .await
        .map_err(CoordinatorError::db("cannot begin building a key"))?;
    let result = async {
        let Some(locked) = ledger_keys::lock_pending_key(client, &record.table_name).await? else {
            return Ok(Build::AlreadyBuilt);
        };
        if locked.built() {
            return Ok(Build::AlreadyBuilt);
        }
        let mut outcome = Build::Built;
        if let Err(e) = add_key(client, &locked, show).await? {
            if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_TABLE_DEFINITION)
                && found.on_table(client, &record.table_name).await?
            {
                outcome = Build::FoundOnTable;
            } else {
                return Ok(Build::Refused {
                    message: ferry_worker::server_message(&e),
                    duplicate: ferry_ledger::error::is_unique_violation(&e),
                });
            }
        }
        ledger_keys::set_key_state(
            client,
            &record.table_name,
            key_state::BUILT,
            Some(&builder),
            None,
        )
        .await?;
        // The key is built and marked, neither committed: a crash here must leave neither.
        failpoint::hit("key_built").map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        Ok(outcome)
    }
    .await;
    end_transaction(
        client,
        matches!(result, Ok(Build::Built | Build::FoundOnTable)),
        "cannot end a key's build",
    )
    .await?;
    result
}

/// How long the key's `ALTER TABLE` waits for the table's lock before it looks at who holds it.
const LOCK_WAIT: &str = "2s";

/// The application name of Ferry's connections (`ferry_worker::conn`).
const FERRY_APPLICATION: &str = "ferry";

/// Adds `key`'s constraint inside the caller's transaction. The statement needs the table to
/// itself, so it waits for every session that holds a lock on it. A Ferry session still writing
/// into the table at this point is a loader that can never commit (every shard of the run is
/// done, so its checkpoint cannot move, and no other run may write into a table whose key is
/// pending): typically a loader cut off mid-COPY whose connection the server has not noticed
/// dying. Such sessions are ended (`pg_terminate_backend`); any other holder is waited for, named
/// on the phase line and in the log. `Ok(Err(e))`: the server refused the key itself.
async fn add_key(
    client: &Client,
    key: &PendingKey,
    show: &(dyn Fn(String) + Sync),
) -> Result<std::result::Result<(), tokio_postgres::Error>> {
    let db = |what: &'static str| CoordinatorError::db(what);
    client
        .batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        .await
        .map_err(db("cannot set the key build's lock timeout"))?;
    let mut waits = 0u64;
    loop {
        client
            .batch_execute("SAVEPOINT ferry_key")
            .await
            .map_err(db("cannot begin building a key"))?;
        match client.batch_execute(&key.key_sql).await {
            Ok(()) => return Ok(Ok(())),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT ferry_key")
                    .await
                    .map_err(db("cannot wait for a table's lock"))?;
            }
            Err(e) => {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT ferry_key")
                    .await
                    .map_err(db("cannot end a refused key build"))?;
                return Ok(Err(e));
            }
        }
        waits += 1;
        let holders = client
            .query(
                "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), l.mode \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'relation' AND l.granted AND l.relation = to_regclass($1::text) \
                   AND l.pid <> pg_backend_pid()",
                &[&quote_ident(&key.table_name)],
            )
            .await
            .map_err(db("cannot read who holds a table's lock"))?;
        let mut waiting_for = Vec::new();
        for row in &holders {
            let (pid, application, state, mode): (i32, String, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if application == FERRY_APPLICATION && mode == "RowExclusiveLock" {
                let ended = client
                    .query_one("SELECT pg_terminate_backend($1::int4)", &[&pid])
                    .await
                    .map(|r| r.get::<_, bool>(0));
                tracing::warn!(table = %key.table_name, pid, ended = ?ended, "ended a ferry loader still writing into a table whose every shard is done (its chunk could never commit), so the key can be built");
                if matches!(ended, Ok(true)) {
                    continue;
                }
            }
            waiting_for.push(format!("pid {pid} ({application:?}, {state}, {mode})"));
        }
        if !waiting_for.is_empty() {
            let text = format!(
                "building the key of table {:?} waits for the sessions holding the table: {}",
                key.table_name,
                waiting_for.join(", ")
            );
            show(text.clone());
            if waits == 1 || waits % 30 == 0 {
                tracing::warn!(table = %key.table_name, "{text}");
            }
        }
    }
}

/// How many keys held twice are named in the problem.
const DUPLICATES_NAMED: i64 = 3;

/// The keys `record`'s table holds more than once, each with the lines it came from: the rows'
/// provenance names the chunks, which are read again from the export to find the lines.
async fn name_duplicates(
    client: &Client,
    run: &RunRecord,
    record: &PendingKey,
    aws: &ferry_shared::config::AwsSettings,
    reject_lines: RejectLines,
) -> Result<String> {
    // The encoder's tables, in the order of its rows' table numbers.
    let encoder = ferry_worker::reread::encoder(run)?;
    let tables = encoder.tables().clone();
    let Some((index, table)) = tables
        .iter()
        .enumerate()
        .find(|(_, t)| t.table == record.table_name)
    else {
        return Ok("the table holds a key more than once".into());
    };
    let keys: Vec<String> = table.key_columns().map(|c| quote_ident(&c.name)).collect();
    let sql = format!(
        "SELECT array_agg({prov} ORDER BY {prov}) FROM {t} GROUP BY {k} HAVING count(*) > 1 LIMIT {DUPLICATES_NAMED}",
        prov = quote_ident(PROVENANCE_COLUMN),
        t = quote_ident(&table.table),
        k = keys.join(", ")
    );
    let groups: Vec<Vec<Option<i64>>> = client
        .query(&sql, &[])
        .await
        .map_err(CoordinatorError::db(
            "cannot find the keys a table holds twice",
        ))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if groups.is_empty() {
        return Ok("the server found a key twice, but no key is there twice now".into());
    }
    let chunks: BTreeSet<i64> = groups.iter().flatten().flatten().copied().collect();
    // Rows without provenance were not loaded by Ferry (written by hand during the load).
    let foreign = groups.iter().flatten().filter(|p| p.is_none()).count();
    let export = ferry_shared::store::open_export(&run.export_location, aws).await?;
    let bits = ferry_shared::schema::CHUNK_INDEX_BITS;
    let mut lines_of: BTreeMap<Key, Vec<(String, u64)>> = BTreeMap::new();
    let mut unread = Vec::new();
    for provenance in &chunks {
        let (load_id, chunk) = (provenance >> bits, provenance & ((1 << bits) - 1));
        let Some((_, _, data_key)) = client.load_owner(load_id).await? else {
            unread.push(format!("load {load_id} is not in the ledger"));
            continue;
        };
        let location = export.store.location(&data_key);
        match ferry_worker::reread::chunk_keys(
            &export.store,
            &data_key,
            encoder.clone(),
            run.chunk_lines,
            chunk as u64,
            index,
        )
        .await
        {
            Ok(rows) => {
                for (line, key) in rows {
                    lines_of
                        .entry(key)
                        .or_default()
                        .push((location.clone(), line));
                }
            }
            Err(e) => unread.push(format!("{location}: {e}")),
        }
    }
    let mut named: Vec<String> = lines_of
        .iter()
        .filter(|(_, lines)| lines.len() > 1)
        .take(DUPLICATES_NAMED as usize)
        .map(|(key, lines)| {
            let places: Vec<String> = lines
                .iter()
                .map(|(file, line)| format!("line {line} of {file}"))
                .collect();
            let times = match lines.len() {
                2 => "twice".to_string(),
                n => format!("{n} times"),
            };
            format!(
                "the export holds key {} {times}: {}",
                describe_key(table, key, reject_lines),
                places.join(" and ")
            )
        })
        .collect();
    if foreign > 0 {
        named.push(format!(
            "{foreign} of the rows under such keys carry no provenance: they were not loaded by \
             Ferry but written into the table during the load"
        ));
    }
    if named.is_empty() {
        named.push(format!(
            "the table holds a key more than once, in rows from {} chunks whose lines could not \
             be read again{}",
            chunks.len(),
            if unread.is_empty() {
                String::new()
            } else {
                format!(" ({})", unread.join("; "))
            }
        ));
    }
    Ok(named.join("; "))
}

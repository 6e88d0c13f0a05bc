//! A catch-up window's records (SQL in [`crate::sql::window`]): whether a run is a window and may
//! be applied now (the window before it, or the full run, is complete), its deferred records, and
//! the window's state. Applying a window is the worker's sinks' (`ferry_worker::sink::apply`,
//! `prepare_context`, `deferred`).

use crate::sql::run_state;
use crate::sql::window::{self as sql, window_state};
use tokio_postgres::{Client, GenericClient, Row};

use crate::runs::get_run;
use crate::{LedgerError, Result};

/// A change record set aside until the end of its window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferral {
    /// Its line.
    pub line_no: u64,
    /// Why it could not be applied now (the server's words).
    pub reason: String,
    /// The record as read.
    pub raw: Vec<u8>,
}

/// A window as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WindowRecord {
    /// The window's run.
    pub run_id: String,
    /// The full run it follows.
    pub base_run_id: String,
    /// Its place in the chain (1: the window starting at the full export's time).
    pub seq: i64,
    /// The incremental export's ARN.
    pub export_arn: Option<String>,
    /// `exportFromTime`, as written.
    pub export_from: String,
    /// `exportToTime`, as written.
    pub export_to: String,
    /// `exportFromTime` in microseconds since 1970.
    pub from_micros: i64,
    /// `exportToTime` in microseconds since 1970.
    pub to_micros: i64,
    /// `NEW_AND_OLD_IMAGES` or `NEW_IMAGE`.
    pub output_view: Option<String>,
    /// `applying`, `complete` or `failed`.
    pub state: String,
}

impl WindowRecord {
    /// `[from, to)` in words.
    pub fn span(&self) -> String {
        format!("[{}, {})", self.export_from, self.export_to)
    }

    /// The export's id (the ARN's last segment), or the run id.
    pub fn name(&self) -> &str {
        self.export_arn
            .as_deref()
            .and_then(|arn| arn.rsplit('/').next())
            .unwrap_or(&self.run_id)
    }
}

fn window_of(row: &Row) -> WindowRecord {
    WindowRecord {
        run_id: row.get("run_id"),
        base_run_id: row.get("base_run_id"),
        seq: row.get("seq"),
        export_arn: row.get("export_arn"),
        export_from: row.get("export_from"),
        export_to: row.get("export_to"),
        from_micros: row.get("from_micros"),
        to_micros: row.get("to_micros"),
        output_view: row.get("output_view"),
        state: row.get("state"),
    }
}

/// The window whose run is `run_id`, if the run is one.
pub async fn get_window(client: &impl GenericClient, run_id: &str) -> Result<Option<WindowRecord>> {
    let row = client
        .query_opt(sql::SELECT_WINDOW, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read a catch-up window"))?;
    Ok(row.as_ref().map(window_of))
}

/// A full run's windows, in order.
pub async fn get_chain(
    client: &impl GenericClient,
    base_run_id: &str,
) -> Result<Vec<WindowRecord>> {
    let rows = client
        .query(sql::SELECT_CHAIN, &[&base_run_id])
        .await
        .map_err(LedgerError::db("cannot read the catch-up windows"))?;
    Ok(rows.iter().map(window_of).collect())
}

/// Records `window` in its chain; `Ok(false)` when another window holds its place (or starts at
/// its time) already.
pub async fn insert_window(client: &Client, window: &WindowRecord) -> Result<bool> {
    let result = client
        .execute(
            sql::INSERT_WINDOW,
            &[
                &window.run_id,
                &window.base_run_id,
                &window.seq,
                &window.export_arn,
                &window.export_from,
                &window.export_to,
                &window.from_micros,
                &window.to_micros,
                &window.output_view,
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if crate::error::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(LedgerError::Db {
            context: "cannot record a catch-up window".into(),
            source: e,
        }),
    }
}

/// Sets a window's state (and its run's).
pub async fn set_window_state(client: &Client, run_id: &str, state: &str) -> Result<()> {
    client
        .execute(sql::SET_WINDOW_STATE, &[&run_id, &state])
        .await
        .map_err(LedgerError::db("cannot record a window's state"))?;
    Ok(())
}

/// What must be complete before `window` applies: the window before it, or the full run.
pub async fn predecessor_complete(
    client: &Client,
    window: &WindowRecord,
) -> Result<Result<(), String>> {
    if window.seq <= 1 {
        let base = get_run(client, &window.base_run_id).await?;
        return Ok(match base {
            Some(run) if run.state == run_state::COMPLETE => Ok(()),
            Some(run) => Err(format!(
                "window {} {} cannot be applied before the full run {} it follows is complete (it is {}): finish that run first",
                window.name(),
                window.span(),
                run.run_id,
                run.state
            )),
            None => Err(format!(
                "window {} {} follows full run {}, which is not in the ledger",
                window.name(),
                window.span(),
                window.base_run_id
            )),
        });
    }
    let row = client
        .query_opt(
            sql::SELECT_WINDOW_AT,
            &[&window.base_run_id, &(window.seq - 1)],
        )
        .await
        .map_err(LedgerError::db("cannot read a catch-up window"))?;
    Ok(match row.as_ref().map(window_of) {
        Some(previous) if previous.state == window_state::COMPLETE => Ok(()),
        Some(previous) => Err(format!(
            "window {} {} cannot be applied before window {} {} is complete (it is {})",
            window.name(),
            window.span(),
            previous.name(),
            previous.span(),
            previous.state
        )),
        None => Err(format!(
            "window {} {} has no window before it in the ledger",
            window.name(),
            window.span()
        )),
    })
}

/// Refuses to apply run `run_id` unless it is a window whose predecessor is complete (a loader
/// checks it before every shard, whoever submitted it).
pub async fn check_next(client: &Client, run_id: &str) -> Result<()> {
    let window = get_window(client, run_id)
        .await?
        .ok_or_else(|| LedgerError::Unexpected(format!("run {run_id} is not a catch-up window")))?;
    predecessor_complete(client, &window)
        .await?
        .map_err(LedgerError::Unexpected)
}

/// Records a chunk's deferred change records (in the chunk's transaction).
pub async fn record_deferred(
    client: &Client,
    run_id: &str,
    shard_id: &str,
    generation: i64,
    deferred: &[Deferral],
) -> Result<()> {
    for record in deferred {
        let line = record.line_no as i64;
        client
            .execute(
                sql::UPSERT_DEFERRED,
                &[
                    &run_id,
                    &shard_id,
                    &line,
                    &generation,
                    &record.reason,
                    &record.raw,
                ],
            )
            .await
            .map_err(LedgerError::db("cannot record a deferred change record"))?;
    }
    Ok(())
}

/// Removes the deferred records of a shard's earlier generations (a shard applied again).
pub async fn delete_stale_deferred(
    client: &Client,
    run_id: &str,
    shard_id: &str,
    generation: i64,
) -> Result<u64> {
    client
        .execute(
            sql::DELETE_STALE_DEFERRED,
            &[&run_id, &shard_id, &generation],
        )
        .await
        .map_err(LedgerError::db("cannot remove stale deferred records"))
}

/// A window's deferred records still waiting.
pub async fn count_deferred(client: &Client, run_id: &str) -> Result<u64> {
    let row = client
        .query_one(sql::COUNT_DEFERRED, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot count deferred records"))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// A deferred change record as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferredRecord {
    /// Its shard.
    pub shard_id: String,
    /// Its line.
    pub line_no: i64,
    /// The shard's generation that set it aside.
    pub generation: i64,
    /// Why it was refused then.
    pub reason: String,
    /// The record as read.
    pub raw: Vec<u8>,
}

/// A window's deferred records, in shard and line order.
pub async fn deferred_records(client: &Client, run_id: &str) -> Result<Vec<DeferredRecord>> {
    let rows = client
        .query(sql::SELECT_DEFERRED, &[&run_id])
        .await
        .map_err(LedgerError::db("cannot read deferred records"))?;
    Ok(rows
        .iter()
        .map(|r| DeferredRecord {
            shard_id: r.get(0),
            line_no: r.get(1),
            generation: r.get(2),
            reason: r.get(3),
            raw: r.get(4),
        })
        .collect())
}

/// Takes a deferred record off the list (in the transaction that applies it): `false` when
/// another process took it first.
pub async fn take_deferred(client: &Client, run_id: &str, record: &DeferredRecord) -> Result<bool> {
    let taken = client
        .execute(
            sql::DELETE_DEFERRED,
            &[&run_id, &record.shard_id, &record.line_no],
        )
        .await
        .map_err(LedgerError::db("cannot take a deferred record"))?;
    Ok(taken == 1)
}

/// Turns a deferred record that never applied into a reject of its shard (the shard counts it),
/// in the caller's transaction: `reason` and `raw` as the ledger keeps them
/// (`load.reject_lines`). `false` when another process took the record first.
pub async fn reject_deferred(
    client: &Client,
    run_id: &str,
    record: &DeferredRecord,
    reason: &str,
    raw: &[u8],
) -> Result<bool> {
    if !take_deferred(client, run_id, record).await? {
        return Ok(false);
    }
    let reject = crate::runs::RejectRow {
        line_no: record.line_no.max(0) as u64,
        reason,
        raw,
    };
    crate::runs::insert_rejects(
        client,
        run_id,
        &record.shard_id,
        record.generation,
        &[reject],
    )
    .await
    .map_err(LedgerError::db(
        "cannot record a deferred record as a reject",
    ))?;
    client
        .execute(
            sql::COUNT_DEFERRED_AS_REJECTED,
            &[&run_id, &record.shard_id],
        )
        .await
        .map_err(LedgerError::db(
            "cannot count a deferred record as a reject",
        ))?;
    Ok(true)
}

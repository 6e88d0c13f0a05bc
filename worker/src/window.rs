//! A catch-up window on the worker's side (SQL in [`ferry_shared::window`]): whether a run is a
//! window and may be applied now (the window before it, or the full run, is complete), the
//! loading context that applies its change records, its deferred records, and the end of a
//! window: deferred records retried in rounds, the rest rejected, the window's state.

use std::sync::Arc;

use ferry_shared::ledger::run_state;
use ferry_shared::window::{self as sql, window_state};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row};

use crate::decode::{LineRef, RawBlock};
use crate::ledger::{self, RunRecord};
use crate::sink::apply::{apply_changes, Changes, Deferral, TableSql};
use crate::sink::{BlockEncoder, LoadContext, Payload};
use crate::target::TargetKind;
use crate::{Result, WorkerError};

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
        .map_err(WorkerError::db("cannot read a catch-up window"))?;
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
        .map_err(WorkerError::db("cannot read the catch-up windows"))?;
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
        Err(e) if crate::sink::sql::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(WorkerError::Db {
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
        .map_err(WorkerError::db("cannot record a window's state"))?;
    Ok(())
}

/// What must be complete before `window` applies: the window before it, or the full run.
pub async fn predecessor_complete(
    client: &Client,
    window: &WindowRecord,
) -> Result<Result<(), String>> {
    if window.seq <= 1 {
        let base = ledger::get_run(client, &window.base_run_id).await?;
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
        .map_err(WorkerError::db("cannot read a catch-up window"))?;
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
        .ok_or_else(|| WorkerError::Ledger(format!("run {run_id} is not a catch-up window")))?;
    predecessor_complete(client, &window)
        .await?
        .map_err(WorkerError::Ledger)
}

/// Makes `ctx` apply change records when its run is a catch-up window (a no-op otherwise): the
/// run's schema is the full run's, so its rows are encoded exactly as the full run's were.
pub async fn prepare_context(client: &Client, ctx: &mut LoadContext) -> Result<()> {
    let Some(window) = get_window(client, &ctx.run.run_id).await? else {
        return Ok(());
    };
    let encoder =
        BlockEncoder::for_changes(&ctx.run.schema, Some(&window.export_to), ctx.load_path())?;
    ctx.tables = encoder.tables().clone();
    ctx.encoder = Arc::new(encoder);
    Ok(())
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
            .map_err(WorkerError::db("cannot record a deferred change record"))?;
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
        .map_err(WorkerError::db("cannot remove stale deferred records"))
}

/// A window's deferred records still waiting.
pub async fn count_deferred(client: &Client, run_id: &str) -> Result<u64> {
    let row = client
        .query_one(sql::COUNT_DEFERRED, &[&run_id])
        .await
        .map_err(WorkerError::db("cannot count deferred records"))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// How a window's deferred records ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeferredOutcome {
    /// Applied in a later round.
    pub applied: u64,
    /// Still refused after the last round: now rejects, with their reasons.
    pub rejected: Vec<String>,
    /// Rounds run.
    pub rounds: u32,
}

struct DeferredRow {
    shard_id: String,
    line_no: i64,
    generation: i64,
    reason: String,
    raw: Vec<u8>,
}

/// Retries a window's deferred records in rounds (each record in its own transaction, which also
/// takes it off `ferry.deferred`), while a round applies any; then records what is left as
/// rejects, naming the constraint. Run once every shard of the window is done.
pub async fn resolve_deferred(
    client: &Client,
    run: &RunRecord,
    encoder: &BlockEncoder,
    kind: TargetKind,
) -> Result<DeferredOutcome> {
    let sql_of: Vec<TableSql> = encoder
        .tables()
        .iter()
        .map(|t| TableSql::new(t, kind == TargetKind::HeliosDb))
        .collect();
    let mut outcome = DeferredOutcome::default();
    loop {
        let rows = deferred_rows(client, &run.run_id).await?;
        if rows.is_empty() {
            return Ok(outcome);
        }
        outcome.rounds += 1;
        let mut applied_now = 0;
        let mut last_reasons = Vec::new();
        for row in &rows {
            match retry_one(client, run, encoder, &sql_of, row).await? {
                None => applied_now += 1,
                Some(reason) => last_reasons.push(reason),
            }
        }
        outcome.applied += applied_now;
        tracing::info!(run = %run.run_id, round = outcome.rounds, applied = applied_now, waiting = rows.len() - applied_now as usize, "retried deferred change records");
        if applied_now == 0 {
            // No progress: what is left cannot apply (a cycle, or a value the target refuses).
            for (row, reason) in rows.iter().zip(last_reasons) {
                reject_deferred(client, &run.run_id, row, &reason).await?;
                outcome.rejected.push(format!(
                    "shard {} line {}: {reason}",
                    row.shard_id, row.line_no
                ));
            }
            return Ok(outcome);
        }
    }
}

async fn deferred_rows(client: &Client, run_id: &str) -> Result<Vec<DeferredRow>> {
    let rows = client
        .query(sql::SELECT_DEFERRED, &[&run_id])
        .await
        .map_err(WorkerError::db("cannot read deferred records"))?;
    Ok(rows
        .iter()
        .map(|r| DeferredRow {
            shard_id: r.get(0),
            line_no: r.get(1),
            generation: r.get(2),
            reason: r.get(3),
            raw: r.get(4),
        })
        .collect())
}

/// One deferred record again, in a transaction that also takes it off the list: `None` when it
/// applied (or another process took it), else why it is still refused.
async fn retry_one(
    client: &Client,
    run: &RunRecord,
    encoder: &BlockEncoder,
    sql_of: &[TableSql],
    row: &DeferredRow,
) -> Result<Option<String>> {
    let load = ledger::recorded_load(client, &run.run_id, &row.shard_id, row.generation).await?;
    let chunk = (row.line_no.max(1) as u64 - 1) / run.chunk_lines.max(1);
    let provenance = load
        .and_then(|l| ferry_shared::schema::provenance(l.load_id, chunk))
        .ok_or_else(|| {
            WorkerError::Ledger(format!(
                "deferred record {} line {}: its load is not in the ledger",
                row.shard_id, row.line_no
            ))
        })?;
    let block = RawBlock {
        lines: vec![LineRef {
            line_no: row.line_no as u64,
            start: 0,
            end: row.raw.len(),
        }],
        data: row.raw.clone(),
    };
    let encoded = encoder.encode(&block, provenance)?;
    let mut changes: Vec<Changes> = sql_of.iter().map(|_| Changes::default()).collect();
    for part in encoded.tables {
        if let Payload::Changes(c) = part.payload {
            changes[part.table] = c;
        }
    }
    client
        .batch_execute("BEGIN")
        .await
        .map_err(WorkerError::db("cannot begin a deferred record"))?;
    let result = async {
        let taken = client
            .execute(
                sql::DELETE_DEFERRED,
                &[&run.run_id, &row.shard_id, &row.line_no],
            )
            .await
            .map_err(WorkerError::db("cannot take a deferred record"))?;
        if taken != 1 {
            return Ok(None);
        }
        let still = apply_changes(client, sql_of, &changes).await?;
        Ok(still.into_iter().next().map(|d| d.reason))
    }
    .await;
    let end = match &result {
        Ok(None) => "COMMIT",
        _ => "ROLLBACK",
    };
    client.batch_execute(end).await.map_err(WorkerError::db(
        "cannot end a deferred record's transaction",
    ))?;
    result
}

/// A deferred record that never applied: a reject (its shard counts it so), off the list.
async fn reject_deferred(
    client: &Client,
    run_id: &str,
    row: &DeferredRow,
    reason: &str,
) -> Result<()> {
    let text = format!(
        "refused by the target after every other change of the window was applied (a constraint cycle, or a value the target refuses): {reason}"
    );
    // What the ledger keeps of it, as of every other reject (`load.reject_lines`).
    let mode = crate::redact::mode();
    let text = crate::redact::reason(&text, "deferred", mode);
    let text: &str = &text;
    let raw = crate::redact::line(&row.raw, mode);
    let raw: &[u8] = &raw;
    let line = row.line_no;
    client
        .batch_execute("BEGIN")
        .await
        .map_err(WorkerError::db("cannot begin a reject"))?;
    let result = async {
        let taken = client
            .execute(sql::DELETE_DEFERRED, &[&run_id, &row.shard_id, &line])
            .await?;
        if taken == 1 {
            let head = ferry_shared::ledger::REJECT_INSERT_HEAD;
            let statement = format!(
                "{head}{}{}",
                ferry_shared::ledger::reject_values(0),
                ferry_shared::ledger::REJECT_INSERT_TAIL
            );
            let params: [&(dyn ToSql + Sync); 6] =
                [&run_id, &row.shard_id, &line, &text, &raw, &row.generation];
            client.execute(statement.as_str(), &params).await?;
            client
                .execute(sql::COUNT_DEFERRED_AS_REJECTED, &[&run_id, &row.shard_id])
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let _ = client.batch_execute(end).await;
    result.map_err(WorkerError::db(
        "cannot record a deferred record as a reject",
    ))?;
    tracing::warn!(run = run_id, shard = %row.shard_id, line = row.line_no, earlier = %row.reason, "a deferred change record was rejected");
    Ok(())
}

//! The end of a catch-up window: its deferred change records (set aside by [`super::apply`] when
//! a constraint refused them mid-window) retried in rounds, each in its own transaction, while a
//! round applies any; what is left becomes rejects naming the constraint.

use ferry_ledger::window::{self as windows, DeferredRecord};
use tokio_postgres::Client;

use super::apply::{apply_changes, TableSql};
use super::encode::Changes;
use super::{BlockEncoder, Payload};
use crate::decode::{LineRef, RawBlock};
use crate::target::TargetKind;
use crate::{Result, WorkerError};
use ferry_ledger::RunRecord;

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
        let rows = windows::deferred_records(client, &run.run_id).await?;
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

/// One deferred record again, in a transaction that also takes it off the list: `None` when it
/// applied (or another process took it), else why it is still refused.
async fn retry_one(
    client: &Client,
    run: &RunRecord,
    encoder: &BlockEncoder,
    sql_of: &[TableSql],
    row: &DeferredRecord,
) -> Result<Option<String>> {
    let load =
        ferry_ledger::Ledger::recorded_load(client, &run.run_id, &row.shard_id, row.generation)
            .await?;
    let chunk = (row.line_no.max(1) as u64 - 1) / run.chunk_lines.max(1);
    let provenance = load
        .and_then(|l| ferry_shared::schema::provenance(l.load_id, chunk))
        .ok_or_else(|| {
            WorkerError::ledger(format!(
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
        if !windows::take_deferred(client, &run.run_id, row).await? {
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
    row: &DeferredRecord,
    reason: &str,
) -> Result<()> {
    let text = format!(
        "refused by the target after every other change of the window was applied (a constraint cycle, or a value the target refuses): {reason}"
    );
    // What the ledger keeps of it, as of every other reject (`load.reject_lines`).
    let mode = crate::redact::mode();
    let text = crate::redact::reason(&text, "deferred", mode);
    let raw = crate::redact::line(&row.raw, mode);
    client
        .batch_execute("BEGIN")
        .await
        .map_err(WorkerError::db("cannot begin a reject"))?;
    let result = windows::reject_deferred(client, run_id, row, &text, &raw).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let _ = client.batch_execute(end).await;
    result?;
    tracing::warn!(run = run_id, shard = %row.shard_id, line = row.line_no, earlier = %row.reason, "a deferred change record was rejected");
    Ok(())
}

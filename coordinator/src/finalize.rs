//! `finalize`: the end of a run, shared by the fleet's `finalize` command and `migrate`.
//!
//! 1. Reconcile: every shard must be done, with loaded + rejected + filtered = the manifest's
//!    `itemCount` and its MD5 matched; rejects must stay within `max_rejects`.
//! 2. Post-load steps: `ANALYZE` of the table, so the planner knows its new size (a server that
//!    refuses it gets a warning, not a failure: statistics are not data).
//! 3. Verify: the table must hold at least the rows the ledger says were loaded (it may hold more
//!    with `--append`); fewer means rows were lost, and the run is not verified.
//! 4. Write the report into `ferry.runs` and set the run's state.
//!
//! The post-load steps run only once every shard reconciled: on a partial load they would be
//! wasted work, and the run will be finalized again.

use ferry_shared::ident::quote_ident;
use ferry_worker::ledger::{self, RunRecord};
use tokio_postgres::Client;

use crate::report::{build_report, Report, ReportContext};
use crate::Result;

/// Finalizes `run`: reconcile, post-load steps, verify, record. Returns the report; its
/// [`Report::verified`] decides the exit code.
pub async fn finalize(client: &Client, run: &RunRecord, context: &ReportContext) -> Result<Report> {
    let mut context = context.clone();
    context.count_table_rows = true;
    let mut report = build_report(client, run, &context).await?;
    if report.verified() {
        let analyze = format!("ANALYZE {}", quote_ident(&run.target_table));
        match client.batch_execute(&analyze).await {
            Ok(()) => report.post_load.push(analyze),
            Err(e) => {
                tracing::warn!(table = %run.target_table, error = %e, "the target refused ANALYZE: statistics not updated");
                report
                    .post_load
                    .push(format!("{analyze} (refused by the server: {e})"));
            }
        }
    }
    if let Some(rows) = report.table_rows {
        if rows < report.rows_loaded as i64 {
            report.problems.push(format!(
                "table {:?} holds {rows} rows, fewer than the {} the ledger says were loaded",
                run.target_table, report.rows_loaded
            ));
            report.state = ferry_shared::ledger::run_state::FAILED.to_string();
        }
    }
    let json = serde_json::to_string(&report).unwrap_or_default();
    ledger::finish_run(client, &run.run_id, &report.state, &json).await?;
    Ok(report)
}

//! A run's lineage, and which day-two operations it allows: the one place that answers "what
//! else may already be there?" before a command changes what a run owns; and how far a full
//! run's tables are caught up by its windows ([`behind`], for `status` and `catch-up`).
//!
//! A *full run* loads an export into its tables (or a Parquet dataset). *Windows* (catch-up runs,
//! [`crate::window`]) follow it in order, each applying an incremental export's changes to the
//! same tables: their upserts replace rows the full run wrote (the new row carries the window's
//! provenance) and their deletes remove them. *Appends* are other full runs into the same tables
//! or dataset (`--append`), each owning the rows (or files) its loads wrote.
//!
//! The invariants the operations keep (`docs/design.md`, "Lineage"):
//! - **A shard's generation ends only when nothing of it is in flight.** `reset` of a shard whose
//!   chunk is being written ahead of its checkpoint (an autocommit COPY) is refused unless the
//!   user states no worker is alive (`--force`); the refusal is enforced by the restart's own
//!   conditional update, not only by this check (`RESTART_SHARD`).
//! - **A window's changes are never undone by a reset.** Once a window follows a full run, the
//!   full run's rows are no longer only the full run's: a window may have replaced them (the row
//!   then carries the window's provenance, and a reload of the full run's file would collide with
//!   it) or deleted them (a reload would bring them back). So `reset` of a run that windows
//!   follow is refused, and so is `reset` of a window's shard (a failed window file is applied
//!   again from its start by `catch-up`, removing nothing).

use crate::sql::window::window_state;
use ferry_shared::manifest::micros_of;
use serde::Serialize;
use tokio_postgres::{Client, GenericClient};

use crate::runs::{get_run, RunRecord, ShardRecord};
use crate::window::{get_chain, get_window, WindowRecord};
use crate::Result;

/// A run and the runs its rows are tied to.
#[derive(Clone, Debug)]
pub struct Lineage {
    /// The run asked about.
    pub run: RunRecord,
    /// When the run is a catch-up window: the window.
    pub window: Option<WindowRecord>,
    /// When the run is a full run: the windows recorded after it, in order.
    pub windows: Vec<WindowRecord>,
}

/// Why an operation is not allowed, in words that say what to do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Lineage {
    /// Reads `run`'s lineage from the ledger.
    pub async fn of(client: &impl GenericClient, run: RunRecord) -> Result<Lineage> {
        let window = get_window(client, &run.run_id).await?;
        let windows = if window.is_none() {
            get_chain(client, &run.run_id).await?
        } else {
            Vec::new()
        };
        Ok(Lineage {
            run,
            window,
            windows,
        })
    }

    /// Whether shards of this run may be started over from nothing (their rows removed).
    pub fn allows_reset(&self) -> std::result::Result<(), Refusal> {
        if let Some(window) = &self.window {
            return Err(Refusal(format!(
                "run {} is catch-up window {} of run {} ({}): a window's changes (its deletes \
                 among them) cannot be undone by removing its rows, so its shards are never reset; \
                 a failed window file is applied again from its start by running `catch-up` again",
                self.run.run_id,
                window.seq,
                window.base_run_id,
                window.span()
            )));
        }
        if let Some(last) = self.windows.last() {
            return Err(Refusal(format!(
                "run {} is followed by {} catch-up window(s) (the last, {}, is {}): they replaced \
                 or deleted rows this run loaded, so removing this run's rows and loading its \
                 files again would lose their changes or collide with them. To load the table \
                 again, drop it and run `migrate` and `catch-up` from the start",
                self.run.run_id,
                self.windows.len(),
                last.name(),
                last.state
            )));
        }
        Ok(())
    }

    /// Whether `shard` may be started over now: refused while a chunk is being written ahead of
    /// its checkpoint, unless `force` (the user states no worker is alive).
    pub fn allows_shard_reset(
        &self,
        shard: &ShardRecord,
        force: bool,
    ) -> std::result::Result<(), Refusal> {
        match shard.copying_from {
            Some(from) if !force => Err(Refusal(in_flight(&self.run.run_id, shard, from))),
            _ => Ok(()),
        }
    }
}

/// Where a full run's tables are: its last complete window's `exportToTime`, or the full
/// export's time.
pub async fn caught_up_to(client: &Client, base: &RunRecord) -> Result<Option<String>> {
    let chain = get_chain(client, &base.run_id).await?;
    Ok(chain
        .iter()
        .rev()
        .find(|w| w.state == window_state::COMPLETE)
        .map(|w| w.export_to.clone())
        .or_else(|| base.export_time.clone()))
}

/// How far behind a run's tables are, for `status`.
#[derive(Clone, Debug, Serialize)]
pub struct Behind {
    /// The full run.
    pub base_run_id: String,
    /// Windows applied.
    pub windows_applied: usize,
    /// The window being applied, if any.
    pub applying: Option<String>,
    /// The last applied `exportToTime` (the full export's time when none is).
    pub caught_up_to: Option<String>,
    /// Seconds between that time and now.
    pub behind_seconds: Option<f64>,
}

impl Behind {
    /// One line of text.
    pub fn to_text(&self) -> String {
        let behind = match self.behind_seconds {
            Some(s) if s >= 3600.0 => format!("{:.1} h behind", s / 3600.0),
            Some(s) => format!("{:.0} min behind", s / 60.0),
            None => "behind by an unknown time".into(),
        };
        format!(
            "catch-up: the tables of run {} are at {} ({behind}), {} window(s) applied{}\n",
            self.base_run_id,
            self.caught_up_to.as_deref().unwrap_or("(unknown)"),
            self.windows_applied,
            self.applying
                .as_deref()
                .map(|w| format!(", applying {w}"))
                .unwrap_or_default()
        )
    }
}

/// How far behind the tables of `run` (a full run or one of its windows) are.
pub async fn behind(client: &Client, run: &RunRecord) -> Result<Behind> {
    let base = match get_window(client, &run.run_id).await? {
        Some(window) => get_run(client, &window.base_run_id)
            .await?
            .unwrap_or_else(|| run.clone()),
        None => run.clone(),
    };
    let chain = get_chain(client, &base.run_id).await?;
    let caught_up_to = caught_up_to(client, &base).await?;
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    Ok(Behind {
        base_run_id: base.run_id.clone(),
        windows_applied: chain
            .iter()
            .filter(|w| w.state == window_state::COMPLETE)
            .count(),
        applying: chain
            .iter()
            .find(|w| w.state != window_state::COMPLETE)
            .map(|w| format!("{} {} ({})", w.name(), w.span(), w.state)),
        behind_seconds: caught_up_to
            .as_deref()
            .and_then(micros_of)
            .map(|t| (now_micros - t) as f64 / 1e6),
        caught_up_to,
    })
}

/// The refusal of a reset of a shard with a chunk in flight.
pub fn in_flight(run_id: &str, shard: &ShardRecord, from: u64) -> String {
    format!(
        "shard {} of run {run_id} has a chunk in flight (written after line {from}, ahead of \
         its checkpoint): a worker may still be committing it, and rows it commits after a reset \
         would stay in the table. Stop the workers (or let the shard finish) and reset again; \
         once no worker is loading this shard (a worker killed mid-chunk, or a shard that failed \
         on a key conflict and whose loaders have stopped), `reset --force` starts it over and \
         removes what was left",
        shard.shard_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::schema::{ColumnSpec, DdbType, TableSchema};

    fn run(run_id: &str) -> RunRecord {
        let key = |name: &str| ColumnSpec {
            name: name.into(),
            ddb_type: DdbType::S,
            pg_type: DdbType::S.pg_type().unwrap(),
            is_key: true,
        };
        let schema = TableSchema {
            table: "t".into(),
            columns: vec![key("pk"), key("sk")],
            overflow_column: "attrs".into(),
            nested_json: Default::default(),
            on_type_mismatch: Default::default(),
            numeric_limit: Default::default(),
            routing: None,
            provenance: true,
        };
        RunRecord::for_test(run_id, std::path::Path::new("/x"), schema, 10, 10, None)
    }

    fn window(run_id: &str, seq: i64, state: &str) -> WindowRecord {
        WindowRecord {
            run_id: run_id.into(),
            base_run_id: "full".into(),
            seq,
            export_arn: Some(format!("arn:aws:dynamodb:r:1:table/t/export/{run_id}")),
            export_from: "2026-11-01T00:00:00.000Z".into(),
            export_to: "2026-11-01T01:00:00.000Z".into(),
            from_micros: 0,
            to_micros: 1,
            output_view: None,
            state: state.into(),
        }
    }

    fn shard(copying_from: Option<u64>) -> ShardRecord {
        ShardRecord {
            committed_lines: copying_from.unwrap_or(0),
            copying_from,
            ..ShardRecord::for_test("s1", "data/s1.json.gz", 10, None)
        }
    }

    #[test]
    fn a_full_run_without_windows_may_be_reset() {
        let lineage = Lineage {
            run: run("full"),
            window: None,
            windows: Vec::new(),
        };
        assert_eq!(lineage.allows_reset(), Ok(()));
    }

    #[test]
    fn a_run_that_windows_follow_and_a_window_are_never_reset() {
        let followed = Lineage {
            run: run("full"),
            window: None,
            windows: vec![window("w1", 1, "complete"), window("w2", 2, "applying")],
        };
        let refusal = followed.allows_reset().unwrap_err().0;
        assert!(
            refusal.contains("followed by 2 catch-up window(s)")
                && refusal.contains("w2")
                && refusal.contains("applying")
                && refusal.contains("drop it"),
            "{refusal}"
        );
        let a_window = Lineage {
            run: run("w2"),
            window: Some(window("w2", 2, "failed")),
            windows: Vec::new(),
        };
        let refusal = a_window.allows_reset().unwrap_err().0;
        assert!(
            refusal.contains("catch-up window 2 of run full")
                && refusal.contains("running `catch-up` again"),
            "{refusal}"
        );
    }

    #[test]
    fn a_shard_with_a_chunk_in_flight_is_reset_only_when_forced() {
        let lineage = Lineage {
            run: run("full"),
            window: None,
            windows: Vec::new(),
        };
        assert_eq!(lineage.allows_shard_reset(&shard(None), false), Ok(()));
        let refusal = lineage
            .allows_shard_reset(&shard(Some(30)), false)
            .unwrap_err()
            .0;
        assert!(
            refusal.contains("shard s1 of run full has a chunk in flight (written after line 30")
                && refusal.contains("--force"),
            "{refusal}"
        );
        assert_eq!(lineage.allows_shard_reset(&shard(Some(30)), true), Ok(()));
    }
}

//! A run's lineage, and which day-two operations it allows: the one place that answers "what
//! else may already be there?" before a command changes what a run owns.
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

use tokio_postgres::GenericClient;

use crate::ledger::{RunRecord, ShardRecord};
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

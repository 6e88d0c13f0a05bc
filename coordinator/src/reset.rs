//! `reset`: starts shards of a run over from nothing. The shard's generation moves on (so no
//! checkpoint of its earlier loads can move again), then every row its earlier loads wrote is
//! removed by provenance, in every table of the run, with its rejects. Used when a data file
//! changed under a run (Ferry refuses to mix two versions of a file) or to load a shard again on
//! purpose; the shard is then loaded again by `migrate`, `submit` and the workers.
//!
//! What the run's lineage forbids is refused before anything changes
//! ([`ferry_ledger::lineage::Lineage::allows_reset`]): a window's shards, a run that windows
//! follow, and (without `--force`) a shard whose chunk is being written ahead of its checkpoint.

use ferry_ledger::lineage::{self, Lineage};
use ferry_ledger::runs as ledger;
use ferry_ledger::shard_state;
use ferry_ledger::{Restart, RunRecord};
use ferry_worker::sink::{run_tables, unload_shard};
use tokio_postgres::Client;

use crate::{CoordinatorError, Result};

/// Which shards to start over.
#[derive(Clone, Debug)]
pub enum Shards {
    /// These shards.
    Named(Vec<String>),
    /// Every failed shard.
    Failed,
}

/// Starts `shards` of `run` over; returns the shards reset. `force`: pass over chunks in flight
/// (the user states that no worker is alive).
pub async fn reset(
    client: &Client,
    run: &RunRecord,
    shards: &Shards,
    force: bool,
) -> Result<Vec<String>> {
    let lineage = Lineage::of(client, run.clone()).await?;
    lineage
        .allows_reset()
        .map_err(|refusal| CoordinatorError::Invalid(refusal.0))?;
    let all = ledger::get_shards(client, &run.run_id).await?;
    let chosen: Vec<_> = match shards {
        Shards::Failed => all
            .iter()
            .filter(|s| s.state == shard_state::FAILED)
            .collect(),
        Shards::Named(names) => {
            let mut chosen = Vec::new();
            for name in names {
                let shard = all
                    .iter()
                    .find(|s| &s.shard_id == name || &s.data_key == name)
                    .ok_or_else(|| {
                        CoordinatorError::Invalid(format!(
                            "run {} has no shard {name:?} (name a shard id or its data file key)",
                            run.run_id
                        ))
                    })?;
                chosen.push(shard);
            }
            chosen
        }
    };
    // Every chosen shard is checked before any is touched; the restart's conditional update
    // enforces the same rule against a worker that marks a chunk after this look.
    for shard in &chosen {
        lineage
            .allows_shard_reset(shard, force)
            .map_err(|refusal| CoordinatorError::Invalid(refusal.0))?;
    }
    let tables = run_tables(&run.schema);
    let mut reset = Vec::new();
    for shard in chosen {
        let restart = Restart {
            state: shard_state::PENDING,
            error: None,
            md5_ok: None,
            items_seen: None,
            over_chunk_in_flight: force,
        };
        let restarted = if crate::report::is_parquet(run) {
            // A Parquet run's rows are its files: the load's files are deleted.
            let output = ferry_worker::sink::parquet::output_of(client, &run.run_id).await?;
            let files = ferry_worker::sink::parquet::ParquetFiles::new(client, output);
            unload_shard(client, &files, &run.run_id, &tables, shard, restart).await?
        } else {
            unload_shard(client, client, &run.run_id, &tables, shard, restart).await?
        };
        if !restarted {
            // A worker marked a chunk in flight after the look above. The shards reset before
            // it load again: the run is loading.
            if !reset.is_empty() {
                mark_loading(client, run).await?;
            }
            let now = ledger::get_shards(client, &run.run_id)
                .await?
                .into_iter()
                .find(|s| s.shard_id == shard.shard_id);
            let from = now.as_ref().and_then(|s| s.copying_from).unwrap_or(0);
            return Err(CoordinatorError::Invalid(format!(
                "{}{}",
                lineage::in_flight(&run.run_id, shard, from),
                if reset.is_empty() {
                    String::new()
                } else {
                    format!(" (reset before it: {})", reset.join(", "))
                }
            )));
        }
        tracing::info!(run = %run.run_id, shard = %shard.shard_id, "shard reset: its rows were removed and it loads again from the start");
        reset.push(shard.shard_id.clone());
    }
    if !reset.is_empty() {
        mark_loading(client, run).await?;
    }
    Ok(reset)
}

/// A run some of whose shards start over is loading again.
async fn mark_loading(client: &Client, run: &RunRecord) -> Result<()> {
    if run.state != ferry_ledger::run_state::LOADING {
        ledger::finish_run(client, &run.run_id, ferry_ledger::run_state::LOADING, "").await?;
    }
    Ok(())
}

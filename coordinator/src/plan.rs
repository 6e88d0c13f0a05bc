//! Planning a run: find the export, decide the table and its schema, prepare the table, and record
//! the run and its shards in the ledger. Planning is deterministic: the same export, table and
//! mapping give the same run id, schema and shards, and planning a run the ledger already has
//! resumes it with the stored schema and chunk size.

use std::sync::Arc;

use ferry_ledger::run_state;
use ferry_ledger::runs as ledger;
use ferry_ledger::RunRecord;
use ferry_shared::config::{KeyAttribute, Settings, TargetName};
use ferry_shared::ident::{quote_ident, ColumnNames};
use ferry_shared::manifest::{locate_export, md5_hex, ExportListing};
use ferry_shared::schema::routing::{Unmatched, ROUTED_KEY};
use ferry_shared::schema::{
    ColumnSpec, DdbType, NumericLimit, PgType, TableSchema, PROVENANCE_COLUMN,
};
use ferry_shared::store::{open_export, ObjectStore};
use ferry_worker::sink::parquet::{self as parquet_sink, ParquetSpec};
use ferry_worker::target::{LoadPath, Target, TargetKind};
use tokio_postgres::Client;

use crate::infer::{infer_schema, parquet_schema as parquet_columns, sample_export};
use crate::{CoordinatorError, Result};

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// The export: a folder or an `s3://bucket/prefix/` URL (of the export, or of a prefix holding
    /// exactly one export).
    pub export: String,
    /// Key attributes (empty: take them from the config).
    pub keys: Vec<KeyAttribute>,
    /// Target table (default: the config's, else the export's table name).
    pub table: Option<String>,
    /// Load into a table that already holds rows.
    pub append: bool,
    /// Run id (default: derived from the export, table and mapping).
    pub run_id: Option<String>,
    /// Settings.
    pub settings: Settings,
}

/// A planned (or resumed) run.
#[derive(Debug)]
pub struct Plan {
    /// The run as the ledger holds it.
    pub run: RunRecord,
    /// Where its data files are.
    pub store: Arc<dyn ObjectStore>,
    /// The export as found now.
    pub listing: ExportListing,
    /// Whether the ledger already had the run.
    pub resumed: bool,
    /// The target server and its load path.
    pub target: Target,
}

fn derive_run_id(
    listing: &ExportListing,
    export_path: &str,
    table: &str,
    request: &PlanRequest,
    keys: &[KeyAttribute],
) -> String {
    let mapping = &request.settings.mapping;
    let identity = listing
        .summary
        .as_ref()
        .and_then(|s| s.export_arn.clone())
        .unwrap_or_else(|| export_path.to_string());
    let keys: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{}:{}",
                k.name,
                k.ddb_type.map(|t| t.descriptor()).unwrap_or("?")
            )
        })
        .collect();
    let mut fingerprint = format!(
        "{identity}\n{table}\n{}\n{}\n{:?}\n{:?}\n{}\n{}",
        keys.join(","),
        mapping.overflow_column,
        mapping.nested_json,
        mapping.on_type_mismatch,
        mapping.min_presence,
        mapping.sample_items
    );
    if let Some(location) = &request.settings.parquet.location {
        fingerprint.push_str("\nparquet:");
        fingerprint.push_str(
            &ferry_shared::output::canonical_location(location)
                .unwrap_or_else(|_| location.clone()),
        );
    }
    if request.settings.routing.is_enabled() {
        fingerprint.push('\n');
        fingerprint.push_str(&serde_json::to_string(&request.settings.routing).unwrap_or_default());
    }
    let prefix = listing
        .summary
        .as_ref()
        .and_then(|s| s.export_id())
        .map(str::to_string)
        .unwrap_or_else(|| "local".to_string());
    format!("{prefix}-{}", &md5_hex(fingerprint.as_bytes())[..8])
}

/// Opens the export and reads its manifests (the same checks for a folder and for S3).
pub async fn open_listing(
    export: &str,
    settings: &Settings,
) -> Result<(ferry_shared::store::ExportStore, ExportListing)> {
    let opened = open_export(export, &settings.aws).await?;
    let mut listing = locate_export(opened.store.as_ref(), &opened.prefix).await?;
    if let Some(summary) = &listing.summary {
        if summary.is_incremental() {
            return Err(CoordinatorError::Invalid(format!(
                "{} is an incremental export (exportType INCREMENTAL_EXPORT, [{}, {})): apply it after its full run with `ferry-coordinator catch-up --export …`",
                listing.location,
                summary.export_from_time.as_deref().unwrap_or("?"),
                summary.export_to_time.as_deref().unwrap_or("?")
            )));
        }
    }
    // Scan dumps: say what they are, and when they cannot be exact.
    let dumps = crate::scan_dump::warnings(opened.store.as_ref(), &listing).await?;
    listing.warnings.extend(dumps);
    for warning in &listing.warnings {
        tracing::warn!(export = %listing.location, "{warning}");
    }
    Ok((opened, listing))
}

/// Plans the run, or finds it in the ledger.
pub async fn plan(client: &mut Client, request: &PlanRequest) -> Result<Plan> {
    let (opened, listing) = open_listing(&request.export, &request.settings).await?;
    let store: Arc<dyn ObjectStore> = opened.store;
    let export_path = opened.location;
    let table = request
        .table
        .clone()
        .or_else(|| request.settings.mapping.table.clone())
        .or_else(|| {
            listing
                .summary
                .as_ref()
                .and_then(|s| s.table_name())
                .map(str::to_string)
        })
        .ok_or_else(|| {
            CoordinatorError::Invalid(
                "the export has no manifest naming its table: give --table".into(),
            )
        })?;
    let keys = if request.keys.is_empty() {
        request.settings.mapping.key.clone()
    } else {
        request.keys.clone()
    };
    let run_id = request
        .run_id
        .clone()
        .unwrap_or_else(|| derive_run_id(&listing, &export_path, &table, request, &keys));

    let mut target = Target::detect(client, request.settings.load.copy_format).await?;
    ledger::ensure_ledger(client).await?;
    // A Parquet run: the dataset is the target; this database holds only the ledger.
    let parquet = match &request.settings.parquet.location {
        Some(location) => Some(ParquetSpec {
            location: ferry_shared::output::canonical_location(location)?,
            compression: request.settings.parquet.compression,
            row_group_rows: request.settings.parquet.row_group_rows.get(),
        }),
        None => None,
    };
    if parquet.is_some() {
        target.load_path = LoadPath::Parquet;
    }
    if let Some(run) = ledger::get_run(client, &run_id).await? {
        let run_is_parquet = run.load_path.as_deref() == Some(LoadPath::Parquet.as_str());
        if run_is_parquet != parquet.is_some() {
            return Err(CoordinatorError::Invalid(format!(
                "run {run_id} {}: use another --run-id",
                if run_is_parquet {
                    "writes a Parquet dataset, and this command names no --parquet location"
                } else {
                    "loads a database table, and this command names a --parquet location"
                }
            )));
        }
        if let Some(spec) = &parquet {
            let recorded = parquet_sink::recorded_spec(client, &run_id).await?;
            if recorded
                .as_ref()
                .is_some_and(|r| r.location != spec.location)
            {
                return Err(CoordinatorError::Invalid(format!(
                    "run {run_id} writes its dataset to {}, not {}: use another --run-id",
                    recorded.map(|r| r.location).unwrap_or_default(),
                    spec.location
                )));
            }
            parquet_sink::record_output(client, &run_id, spec).await?;
        }
        if run.target_table != table {
            return Err(CoordinatorError::Invalid(format!(
                "run {run_id} loads table {:?}, not {table:?}: use another --run-id",
                run.target_table
            )));
        }
        let arn = listing.summary.as_ref().and_then(|s| s.export_arn.clone());
        if run.export_arn.is_some() && arn.is_some() && run.export_arn != arn {
            return Err(CoordinatorError::Invalid(format!(
                "run {run_id} loads export {}, not {}: use another --run-id",
                run.export_arn.unwrap_or_default(),
                arn.unwrap_or_default()
            )));
        }
        let mut run = run;
        if run.state != run_state::COMPLETE {
            // The run's tables as the run recorded them: the columns it writes must still be
            // there, but post-load steps may have added constraints since (a NOT NULL column
            // that a finished step filled is no reason to refuse the resume).
            if !run_is_parquet {
                let owner = TableOwner {
                    run_id: &run_id,
                    defer_key: false,
                };
                prepare_run_tables(client, &run.schema, TableCheck::Resume, &target, owner).await?;
            }
            if run.max_rejects != request.settings.load.max_rejects {
                ledger::set_max_rejects(client, &run_id, request.settings.load.max_rejects).await?;
                run.max_rejects = request.settings.load.max_rejects;
            }
            if run.chunk_lines != request.settings.load.chunk_lines.get() {
                tracing::info!(run = %run_id, chunk_lines = run.chunk_lines, "keeping the run's recorded chunk size");
            }
        }
        tracing::info!(run = %run_id, table = %table, "resuming run from the ledger");
        return Ok(Plan {
            run,
            store,
            listing,
            resumed: true,
            target,
        });
    }

    let (numeric_limit, column_names) = match parquet {
        Some(_) => (NumericLimit::Unlimited, ColumnNames::Any),
        None => (target.numeric_limit(), target.column_names()),
    };
    let schema = if request.settings.routing.is_enabled() {
        let schema = routed_schema(
            &table,
            &keys,
            &request.settings,
            numeric_limit,
            column_names,
        )?;
        tracing::info!(
            run = %run_id,
            rules = request.settings.routing.rules.len(),
            "routed run: single-table design"
        );
        schema
    } else {
        let stats = sample_export(
            store.clone(),
            &listing,
            request.settings.mapping.sample_items,
        )
        .await?;
        // A key that repeats in the sample fails every shard: say so now, with one that does not.
        if let Some(problem) = crate::infer::key_problem(&stats, &keys) {
            return Err(CoordinatorError::Invalid(problem));
        }
        let schema = match &parquet {
            // Parquet holds any number exactly: decimal128 where the sample fits, else text.
            Some(_) => parquet_columns(
                infer_schema(
                    &table,
                    &keys,
                    &request.settings.mapping,
                    &stats,
                    NumericLimit::Unlimited,
                    ColumnNames::Any,
                )?,
                &stats,
            ),
            None => infer_schema(
                &table,
                &keys,
                &request.settings.mapping,
                &stats,
                target.numeric_limit(),
                target.column_names(),
            )?,
        };
        tracing::info!(
            run = %run_id,
            table = %table,
            sampled_items = stats.items,
            typed_columns = schema.columns.len(),
            overflow = %schema.overflow_column,
            "schema inferred"
        );
        schema
    };
    if let Some(spec) = &parquet {
        if !request.settings.setup.is_empty() {
            tracing::warn!(
                steps = request.settings.setup.len(),
                "a parquet run has no database tables: the [[setup]] statements are not run"
            );
        }
        if let Err(e) = check_dataset_empty(&schema, spec, &request.settings, request.append).await
        {
            planned_meanwhile(client, &run_id, e).await?;
        }
        parquet_sink::record_output(client, &run_id, spec).await?;
    }
    for step in request.settings.setup.iter().filter(|_| parquet.is_none()) {
        if applies(step.only_on, &target) {
            client.batch_execute(&step.sql).await.map_err(|e| {
                let message = ferry_worker::server_message(&e);
                CoordinatorError::Invalid(format!(
                    "setup statement failed: {message}: {}",
                    step.sql
                ))
            })?;
        }
    }
    let check = if request.append {
        TableCheck::NewRun
    } else {
        TableCheck::NewRunEmpty
    };
    if parquet.is_none() {
        let owner = TableOwner {
            run_id: &run_id,
            defer_key: crate::keys::defers_key(request.settings.load.defer_key, &target, check),
        };
        if let Err(e) = prepare_run_tables(client, &schema, check, &target, owner).await {
            if check != TableCheck::NewRunEmpty {
                return Err(e);
            }
            planned_meanwhile(client, &run_id, e).await?;
        }
    }
    let summary = listing.summary.as_ref();
    let run = RunRecord {
        run_id: run_id.clone(),
        export_location: export_path,
        export_arn: summary.and_then(|s| s.export_arn.clone()),
        export_time: summary.and_then(|s| s.export_time.clone()),
        target_table: table,
        schema,
        chunk_lines: request.settings.load.chunk_lines.get(),
        max_rejects: request.settings.load.max_rejects,
        manifest_verified: listing.verified,
        manifest_items: listing.manifest_items(),
        state: run_state::LOADING.to_string(),
        load_path: Some(target.load_path.as_str().to_string()),
    };
    ledger::insert_run(client, &run, &listing.files).await?;
    // The token its queue messages carry (another target's workers never take them).
    ledger::ensure_run_token(client, &run_id).await?;
    // Another coordinator may have planned the same run a moment earlier: the ledger's copy wins.
    let run = ledger::get_run(client, &run_id).await?.ok_or_else(|| {
        CoordinatorError::Invalid(format!("run {run_id} vanished from the ledger"))
    })?;
    Ok(Plan {
        run,
        store,
        listing,
        resumed: false,
        target,
    })
}

/// The emptiness check of a new run failed: when another coordinator planned this same run since
/// this one looked (two `migrate`s started at once, a retried job), the rows or files found are
/// that run's, loaded after its own emptiness check, so this plan goes on and the ledger's copy of
/// the run wins; otherwise `refusal` stands. Found by the command-sequence test
/// (`tests/tests/sequences.rs`: two racing `migrate`s, one refused with "not this run's").
async fn planned_meanwhile(client: &Client, run_id: &str, refusal: CoordinatorError) -> Result<()> {
    if ledger::get_run(client, run_id).await?.is_some() {
        tracing::info!(run = %run_id, "another coordinator planned this run meanwhile: joining it");
        Ok(())
    } else {
        Err(refusal)
    }
}

/// A new Parquet run writes into folders that hold no data files yet (or `--append`): a dataset
/// holding another run's files would mix two loads.
async fn check_dataset_empty(
    schema: &TableSchema,
    spec: &ParquetSpec,
    settings: &Settings,
    append: bool,
) -> Result<()> {
    if append {
        return Ok(());
    }
    let store = ferry_shared::output::open_output(&spec.location, &settings.aws).await?;
    for table in ferry_worker::sink::run_tables(schema) {
        let prefix = format!("{}/", table.table);
        let files = store.list(&prefix).await?;
        if let Some(file) = files.iter().find(|f| f.key.ends_with(".parquet")) {
            return Err(CoordinatorError::Invalid(format!(
                "dataset {} already holds Parquet files ({}) that are not this run's: write to \
                 another --parquet location, or pass --append to add this run's files beside them",
                store.location(&prefix),
                store.location(&file.key)
            )));
        }
    }
    Ok(())
}

/// Whether a `[[setup]]`, `[[post_load]]` or `[[verify]]` entry applies to `target`.
pub fn applies(only_on: Option<TargetName>, target: &Target) -> bool {
    match only_on {
        None => true,
        Some(TargetName::Postgres) => target.kind == TargetKind::Postgres,
        Some(TargetName::Heliosdb) => target.kind == TargetKind::HeliosDb,
    }
}

/// The schema of a routed run: the key attributes (the routing needs their names) and the rules.
fn routed_schema(
    table: &str,
    keys: &[KeyAttribute],
    settings: &Settings,
    numeric_limit: NumericLimit,
    column_names: ColumnNames,
) -> Result<TableSchema> {
    if keys.is_empty() {
        return Err(CoordinatorError::Invalid(
            "routing rules need the key attributes: pass --key PK,SK (or set mapping.key)".into(),
        ));
    }
    let names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
    settings.routing.validate(&names)?;
    // Every column the rules write must read back on the target (the catch-all table's key
    // columns are named as the key attributes).
    let readable = |place: &str, column: &str, hint: &str| match column_names.refusal(column) {
        Some(why) => Err(CoordinatorError::Invalid(format!(
            "{place}: column {column:?} cannot be a column on this target: {why}; {hint}"
        ))),
        None => Ok(()),
    };
    let routing = &settings.routing;
    for rule in &routing.rules {
        let place = format!("routing rule {:?}", rule.name);
        let columns = rule.columns.iter().map(|c| c.name.as_str());
        for column in columns.chain([rule.rest_column.as_str()]) {
            readable(&place, column, "name the column without a dot")?;
        }
    }
    if let (Unmatched::Table, Some(table)) = (routing.unmatched, &routing.catch_all_table) {
        let place = format!("routing.catch_all_table {table:?}");
        for name in &names {
            readable(
                &place,
                name,
                "its key columns are named as the key attributes: reject unmatched items instead (routing.unmatched = \"reject\")",
            )?;
        }
    }
    Ok(TableSchema {
        table: table.to_string(),
        columns: keys
            .iter()
            .map(|k| ColumnSpec {
                name: k.name.clone(),
                ddb_type: k.ddb_type.unwrap_or(DdbType::S),
                pg_type: PgType::Text,
                is_key: true,
            })
            .collect(),
        overflow_column: settings.mapping.overflow_column.clone(),
        nested_json: settings.mapping.nested_json,
        on_type_mismatch: settings.mapping.on_type_mismatch,
        numeric_limit,
        routing: Some(settings.routing.clone()),
        provenance: true,
    })
}

/// How much of a table [`prepare_table`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableCheck {
    /// A new run into a table that must be empty (no `--append`).
    NewRunEmpty,
    /// A new run with `--append`.
    NewRun,
    /// A run the ledger already has: its columns must still be there.
    Resume,
}

/// The run a table is prepared for, and whether a table it creates gets its key after the load
/// ([`crate::keys`]).
#[derive(Clone, Copy, Debug)]
pub struct TableOwner<'a> {
    /// The run.
    pub run_id: &'a str,
    /// A table it creates is created without its key, built after the load.
    pub defer_key: bool,
}

/// Prepares the run's table, or every routed table of a routed run.
pub async fn prepare_run_tables(
    client: &Client,
    schema: &TableSchema,
    check: TableCheck,
    target: &Target,
    owner: TableOwner<'_>,
) -> Result<()> {
    match &schema.routing {
        None => prepare_table(client, schema, "PRIMARY KEY", check, target, owner).await,
        Some(routing) => {
            let keys: Vec<String> = schema.key_columns().map(|c| c.name.clone()).collect();
            for mut table in routing.tables(&keys) {
                table.provenance = schema.provenance;
                prepare_table(client, &table, ROUTED_KEY, check, target, owner).await?;
            }
            Ok(())
        }
    }
}

/// Creates the table when it is absent (its key under `constraint`, or built after the load when
/// `owner` defers it); otherwise adds Ferry's provenance column when missing and checks that its
/// columns fit the schema, that a unique constraint covers the key columns (or that its key is
/// pending for this run), and, for a new run without `--append`, that it is empty. Nothing is
/// loaded before this passes.
pub async fn prepare_table(
    client: &Client,
    schema: &TableSchema,
    constraint: &str,
    check: TableCheck,
    target: &Target,
    owner: TableOwner<'_>,
) -> Result<()> {
    let columns_sql = "SELECT column_name::text, udt_name::text, is_nullable::text, column_default::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1::text";
    let catalog_table = crate::catalog::to_catalog(target.kind, &schema.table);
    let mut rows = client
        .query(columns_sql, &[&catalog_table])
        .await
        .map_err(CoordinatorError::db("cannot inspect the target table"))?;
    if rows.is_empty() && owner.defer_key {
        if !crate::keys::create_without_key(client, schema, constraint, owner.run_id).await? {
            tracing::info!(table = %schema.table, "the target table was created by another process meanwhile");
        }
        rows = client
            .query(columns_sql, &[&catalog_table])
            .await
            .map_err(CoordinatorError::db("cannot inspect the target table"))?;
    } else if rows.is_empty() {
        let create_sql = schema.create_table_sql_keyed_by(constraint);
        match client.batch_execute(&create_sql).await {
            Ok(()) => tracing::info!(table = %schema.table, "created target table"),
            // Another coordinator created it a moment ago (PostgreSQL refuses the second of two
            // concurrent `CREATE TABLE IF NOT EXISTS` with a catalog conflict): the checks below
            // read the table it made, as for any existing table.
            Err(e) if ledger::is_ddl_race(&e) => {
                tracing::info!(table = %schema.table, "the target table was created by another process meanwhile");
            }
            Err(e) => return Err(CoordinatorError::db("cannot create the target table")(e)),
        }
    } else if schema.provenance
        && !rows
            .iter()
            .any(|r| r.get::<_, String>(0) == PROVENANCE_COLUMN)
    {
        let add = format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} BIGINT",
            quote_ident(&schema.table),
            quote_ident(PROVENANCE_COLUMN)
        );
        client.batch_execute(&add).await.map_err(|e| {
            CoordinatorError::Invalid(format!(
                "cannot add Ferry's provenance column {PROVENANCE_COLUMN:?} to table {:?}: {}",
                schema.table,
                ferry_worker::server_message(&e)
            ))
        })?;
        tracing::info!(table = %schema.table, column = PROVENANCE_COLUMN, "added the provenance column");
        rows = client
            .query(columns_sql, &[&catalog_table])
            .await
            .map_err(CoordinatorError::db("cannot inspect the target table"))?;
    }
    let existing: Vec<(String, String, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            let name = crate::catalog::from_catalog(target.kind, r.get(0));
            (name, r.get(1), r.get(2), r.get(3))
        })
        .collect();
    let mut problems = Vec::new();
    let provenance = schema.provenance.then_some((PROVENANCE_COLUMN, "int8"));
    let wanted = schema
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.pg_type.udt_name()))
        .chain(std::iter::once((schema.overflow_column.as_str(), "jsonb")))
        .chain(provenance);
    for (name, udt) in wanted.clone() {
        match existing.iter().find(|e| e.0 == name) {
            None if !existing.is_empty() => problems.push(format!("column {name:?} is missing")),
            Some(e) if e.1 != udt => {
                problems.push(format!("column {name:?} is {}, the run needs {udt}", e.1))
            }
            _ => {}
        }
    }
    if check != TableCheck::Resume {
        for (name, _, nullable, default) in &existing {
            if !wanted.clone().any(|(w, _)| w == name) && nullable == "NO" && default.is_none() {
                problems.push(format!(
                    "column {name:?} is NOT NULL without a default, and no attribute fills it"
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(CoordinatorError::TableMismatch {
            table: schema.table.clone(),
            reason: problems.join("; "),
        });
    }
    require_unique_key(client, schema, target, owner.run_id).await?;
    if check == TableCheck::NewRunEmpty {
        // `SELECT 1 … LIMIT 1` rather than EXISTS: every PostgreSQL-wire server has it.
        let sql = format!("SELECT 1::int8 FROM {} LIMIT 1", quote_ident(&schema.table));
        let non_empty = !client
            .query(&sql, &[])
            .await
            .map_err(CoordinatorError::db("cannot inspect the target table"))?
            .is_empty();
        if non_empty {
            return Err(CoordinatorError::Invalid(format!(
                "table {:?} already holds rows that are not this run's: pass --append to load into it anyway",
                schema.table
            )));
        }
    }
    Ok(())
}

/// Refuses a table without a unique constraint covering its key columns: exactly-once depends on
/// it (a second COPY of a chunk, or a key already in the table, must be refused by the server).
/// A table whose key is pending ([`crate::keys`]) passes for the run that builds it only.
async fn require_unique_key(
    client: &Client,
    schema: &TableSchema,
    target: &Target,
    run_id: &str,
) -> Result<()> {
    let keys: Vec<&str> = schema.key_columns().map(|c| c.name.as_str()).collect();
    let sets = crate::catalog::unique_column_sets(client, &schema.table, target).await?;
    let covered = sets
        .iter()
        .any(|set| !set.is_empty() && set.iter().all(|c| keys.contains(&c.as_str())));
    if covered {
        return Ok(());
    }
    if target.kind == TargetKind::Postgres {
        match crate::keys::pending_for(client, &schema.table, run_id).await? {
            Some(Ok(())) => return Ok(()),
            Some(Err(refusal)) => return Err(CoordinatorError::Invalid(refusal)),
            None => {}
        }
    }
    let columns: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
    Err(CoordinatorError::Invalid(format!(
        "table {:?} has no PRIMARY KEY or UNIQUE constraint over its key columns ({}): Ferry needs \
         one to load each item exactly once (a retried or duplicated chunk is refused by it, and a \
         key already in the table is caught). Add `UNIQUE ({})` to the table's CREATE TABLE (or \
         `ALTER TABLE {} ADD UNIQUE ({})` where the server allows it), then plan again",
        schema.table,
        columns.join(", "),
        columns.join(", "),
        quote_ident(&schema.table),
        columns.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::schema::routing::Routing;

    fn settings(routing: &str) -> Settings {
        Settings {
            routing: Routing::from_toml(routing).expect("valid routing"),
            ..Settings::default()
        }
    }

    #[test]
    fn a_routed_column_named_with_a_dot_is_refused_where_it_would_not_read_back() {
        let dotted_column = settings(
            r#"
            [[routing.rules]]
            name = "orders"
            table = "orders"
            columns = [
              { name = "PK", from = "PK", type = "text" },
              { name = "SK", from = "SK", type = "text" },
              { name = "tax.rate", path = ["tax.rate"], type = "numeric" },
            ]
            "#,
        );
        let keys = KeyAttribute::parse_list("PK,SK").unwrap();
        let plan = |settings: &Settings, names| {
            routed_schema("T", &keys, settings, NumericLimit::Unlimited, names)
        };
        assert!(plan(&dotted_column, ColumnNames::Any).is_ok());
        let err = plan(&dotted_column, ColumnNames::NoDot)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routing rule \"orders\"")
                && err.contains("\"tax.rate\"")
                && err.contains("without a dot"),
            "{err}"
        );

        // The catch-all table's key columns are named as the key attributes.
        let catch_all = settings(
            r#"
            [routing]
            unmatched = "table"
            catch_all_table = "other"
            [[routing.rules]]
            name = "orders"
            table = "orders"
            columns = [
              { name = "pk", path = ["my.pk"], type = "text" },
              { name = "sk", from = "SK", type = "text" },
            ]
            "#,
        );
        let keys = KeyAttribute::parse_list("my.pk,SK").unwrap();
        let err = routed_schema(
            "T",
            &keys,
            &catch_all,
            NumericLimit::Unlimited,
            ColumnNames::NoDot,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("catch_all_table") && err.contains("\"my.pk\""),
            "{err}"
        );
    }
}

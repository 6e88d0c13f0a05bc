//! Amazon Ion exports, on PostgreSQL and HeliosDB: the exact-values test of the DynamoDB JSON
//! path (`e2e.rs`), run on the Ion export of the same items. `tests/history/to_ion.py` rewrites
//! the generated export as DynamoDB's exporter writes Ion (decimals such as `103.`, `6d2` and
//! `4999d-2`, `$dynamodb_SS`/`NS`/`BS` annotated lists, blobs, quoted field names), and the
//! loaded table is compared value by value with the JSON export's items.

use ferry_tests::harness::{
    assert_fixture_matches, fixture_on, gen_options, migrate_path, query_text, small_chunks,
    TestTarget,
};

async fn an_ion_export_loads_every_item_exactly_with_its_values(
    target: TestTarget,
) -> anyhow::Result<()> {
    let fixture = fixture_on(target, "ion_values", &gen_options(7, 5_000, 3)).await?;
    let ion_root = tempfile::tempdir()?;
    let ion_export = ferry_tests::history::to_ion(&fixture.export.export_dir, ion_root.path())?;
    let data: Vec<String> = std::fs::read_dir(ion_export.join("data"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert!(
        !data.is_empty() && data.iter().all(|n| n.ends_with(".ion.gz")),
        "{data:?}"
    );
    let report = migrate_path(
        &fixture.url,
        ion_root.path(),
        small_chunks(700),
        false,
        None,
    )
    .await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.rows_loaded, 5_000);
    assert_eq!(report.rows_rejected, 0);
    assert_eq!(report.shards_total, 5);
    assert_eq!(report.shards_reconciled, 5);
    // The same table the JSON export gives, value by value (compared with the JSON items).
    let rows = assert_fixture_matches(&fixture, "AppTable", &[]).await?;
    assert_eq!(rows, 5_000);
    // Typed columns were inferred from the Ion sample as from JSON.
    let columns = query_text(
        &fixture.url,
        "SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'AppTable'",
    )
    .await?
    .unwrap_or_default();
    assert!(columns.parse::<u32>()? > 4, "{columns} columns");
    // A 38-digit number, read back whole.
    let attrs = query_text(
        &fixture.url,
        "SELECT attrs FROM \"AppTable\" WHERE \"PK\" = 'EDGE#0'",
    )
    .await?
    .unwrap_or_default();
    let attrs: serde_json::Value = serde_json::from_str(&attrs)?;
    assert_eq!(
        attrs["edge_n38"].to_string(),
        "12345678901234567890123456789012345678"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ion_export_loads_exactly_on_postgres() -> anyhow::Result<()> {
    an_ion_export_loads_every_item_exactly_with_its_values(TestTarget::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ion_export_loads_exactly_on_heliosdb() -> anyhow::Result<()> {
    an_ion_export_loads_every_item_exactly_with_its_values(TestTarget::HeliosDb).await
}

//! Scan dumps on PostgreSQL and HeliosDB (the migration guide's "Option B"): the generated
//! export's items written as `aws dynamodb scan --output json` prints them (typed: loaded exactly,
//! compared value by value) and as the guide's boto3 script writes them (plain JSON through its
//! DecimalEncoder: the report says plainly that it cannot be exact, and the item holding
//! DynamoDB's largest number shows why: the float made it 1e+126, out of DynamoDB's range, so it
//! is a reject with that reason). Neither has a manifest: the run is unverified unless accepted.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use ferry_tests::harness::{
    assert_fixture_matches, fixture_on, gen_options, migrate_path, query_text, small_chunks,
    TestTarget,
};

async fn scan_dumps_load(target: TestTarget) -> anyhow::Result<()> {
    let fixture = fixture_on(target, "scan_dump", &gen_options(11, 3_000, 2)).await?;
    let dumps = tempfile::tempdir()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("history/scan_dumps.py");
    let output = Command::new(ferry_tests::history::python()?)
        .arg(script)
        .arg(&fixture.export.export_dir)
        .arg(dumps.path())
        .output()
        .context("running scan_dumps.py")?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The CLI's typed scan output: unverified without --allow-unverified, exact with it.
    let cli = dumps.path().join("scan-output.json");
    let report = migrate_path(
        &fixture.url,
        &cli,
        small_chunks(500),
        false,
        Some("AppTable"),
    )
    .await?;
    assert!(!report.verified(), "{}", report.to_text());
    assert!(
        report.reason().contains("--allow-unverified"),
        "{}",
        report.to_text()
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("scan dump of typed items")),
        "{:?}",
        report.notes
    );
    let report = migrate_path(
        &fixture.url,
        &cli,
        small_chunks(500),
        true,
        Some("AppTable"),
    )
    .await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.rows_loaded, 3_000);
    assert_eq!(report.rows_rejected, 0);
    assert_eq!(
        assert_fixture_matches(&fixture, "AppTable", &[]).await?,
        3_000
    );

    // The guide's plain dump: every item loads, the report says it cannot be exact, and a
    // 38-digit number shows that it is not.
    let guide = dumps.path().join("guide");
    let mut settings = small_chunks(500);
    settings.load.max_rejects = 10;
    let report = migrate_path(&fixture.url, &guide, settings, true, Some("GuideDump")).await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.rows_loaded + report.rows_rejected, 3_000);
    // DynamoDB's largest number, 9.99…E+125, came out of the float as 1e+126: out of range, a
    // reject with its reason (never loaded rounded, never dropped).
    assert_eq!(report.rows_rejected, 1, "{}", report.to_text());
    assert!(
        report.first_rejects[0]
            .reason
            .contains("\"1e+126\" is outside DynamoDB's range"),
        "{}",
        report.to_text()
    );
    assert!(
        report.to_text().contains("CANNOT BE EXACT"),
        "{}",
        report.to_text()
    );
    // The rejected item is the one holding the 38-digit numbers (EDGE#0, line 1).
    assert_eq!(report.first_rejects[0].line_no, 1, "{}", report.to_text());
    let edge = query_text(
        &fixture.url,
        "SELECT count(*)::text FROM \"GuideDump\" WHERE \"PK\" = 'EDGE#0'",
    )
    .await?;
    assert_eq!(edge.as_deref(), Some("0"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_dumps_load_on_postgres() -> anyhow::Result<()> {
    scan_dumps_load(TestTarget::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_dumps_load_on_heliosdb() -> anyhow::Result<()> {
    scan_dumps_load(TestTarget::HeliosDb).await
}

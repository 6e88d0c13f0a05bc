//! End-to-end migrations into a real PostgreSQL cluster and a real HeliosDB server (both started
//! by the harness), compared with the source export value by value. Every case runs against both
//! targets (see the modules at the end); the forced load paths run on PostgreSQL.

use ferry_shared::config::Settings;
use ferry_tests::gen::{add_data_file, rewrite_manifest, ChecksumExt, GenOptions};
use ferry_tests::harness::{
    assert_fixture_matches, assert_run_matches_text, assert_table_matches, connect, fixture,
    fixture_on, gen_options, migrate_in_process, migrate_path, query_i64, query_text, small_chunks,
    TestTarget,
};

async fn a_migration_loads_every_item_exactly_with_its_values(
    target: TestTarget,
) -> anyhow::Result<()> {
    let fixture = fixture_on(target, "e2e_values", &gen_options(7, 5_000, 3)).await?;
    let report = migrate_in_process(&fixture, small_chunks(700), false).await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.state, "complete");
    assert_eq!(report.rows_loaded, 5_000);
    assert_eq!(report.rows_rejected, 0);
    assert_eq!(report.table_rows, Some(5_000));
    assert_eq!(report.shards_total, 5);
    assert_eq!(report.shards_reconciled, 5);
    // Every shard's load time is in the report (the ledger's loads against its shards), and the
    // short text names the slowest.
    assert!(
        report
            .shards
            .iter()
            .all(|s| s.seconds.is_some_and(|t| (0.0..600.0).contains(&t))),
        "{:?}",
        report.shards
    );
    assert!(
        report.to_text().contains("  slowest: "),
        "{}",
        report.to_text()
    );
    let rows = assert_fixture_matches(&fixture, "AppTable", &[]).await?;
    assert_eq!(rows, 5_000);

    // The statistics: on PostgreSQL the key was built and `ANALYZE` ran (beside the row count, on a second
    // connection) and its statistics are there; HeliosDB has no ANALYZE, and the report says so.
    let post_load: Vec<(&str, &str)> = report
        .post_load
        .iter()
        .map(|line| (line.step.as_str(), line.state.as_str()))
        .collect();
    match target {
        TestTarget::Postgres => {
            // The key, built after the load (the run created the table), then the statistics.
            assert_eq!(
                post_load,
                [
                    (
                        "ALTER TABLE \"AppTable\" ADD PRIMARY KEY (\"PK\", \"SK\") (the key, built after the load)",
                        "ran"
                    ),
                    ("ANALYZE \"AppTable\"", "ran")
                ]
            );
            let analyzed = query_i64(
                &fixture.url,
                "SELECT count(*) FROM pg_stats WHERE tablename = 'AppTable' AND attname IN ('PK', 'SK')",
            )
            .await?;
            assert_eq!(analyzed, 2);
        }
        TestTarget::HeliosDb => assert_eq!(post_load, [("ANALYZE", "skipped")]),
    }

    // The schema is typed where the sample is stable, and the rest is in the overflow column.
    let client = connect(&fixture.url).await?;
    let columns: Vec<(String, String)> = client
        .query("SELECT column_name::text, udt_name::text FROM information_schema.columns WHERE table_name = 'AppTable' ORDER BY ordinal_position", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        &columns[..2],
        &[("PK".into(), "text".into()), ("SK".into(), "text".into())]
    );
    // Then the overflow column, then Ferry's provenance column.
    assert_eq!(
        &columns[columns.len() - 2..],
        &[
            ("attrs".to_string(), "jsonb".to_string()),
            ("_ferry_chunk".to_string(), "int8".to_string())
        ]
    );
    assert!(
        columns.contains(&("tags".into(), "_text".into())),
        "{columns:?}"
    );
    assert!(
        columns.contains(&("total".into(), "numeric".into())),
        "{columns:?}"
    );
    assert!(
        !columns.iter().any(|(name, _)| name == "score"),
        "mixed-type score must stay in overflow: {columns:?}"
    );

    // Edge values, read back exactly.
    // (Read as the whole JSON text: HeliosDB's ->> goes through f64.)
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

    // A second run of the finished run is a no-op that says so.
    let again = migrate_in_process(&fixture, small_chunks(700), false).await?;
    assert!(again.already_complete, "{}", again.to_text());
    assert!(again.verified());
    assert_eq!(
        query_i64(&fixture.url, "SELECT count(*) FROM \"AppTable\"").await?,
        5_000
    );
    Ok(())
}

async fn the_output_is_the_same_for_every_chunk_and_block_size(
    target: TestTarget,
) -> anyhow::Result<()> {
    for (i, (chunk, block)) in [(1u64, 1usize), (13, 5), (100_000, 4096)]
        .into_iter()
        .enumerate()
    {
        let fixture =
            fixture_on(target, &format!("e2e_sizes_{i}"), &gen_options(11, 600, 2)).await?;
        let mut settings = small_chunks(chunk);
        settings.load.block_lines = block.try_into()?;
        let report = migrate_in_process(&fixture, settings, false).await?;
        assert!(report.verified(), "chunk {chunk}: {}", report.to_text());
        assert_eq!(
            assert_fixture_matches(&fixture, "AppTable", &[]).await?,
            600
        );
    }
    Ok(())
}

async fn bad_lines_are_rejected_with_line_numbers_and_reasons(
    target: TestTarget,
) -> anyhow::Result<()> {
    let mut fixture = fixture_on(target, "e2e_rejects", &gen_options(3, 400, 2)).await?;
    let bad = vec![
        r#"{"Item":{"PK":{"S":"BAD#1"},"SK":{"S":"X"},"a":{"S":"ok"}}}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BAD#2"},"SK":{"S":"X"}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BAD#3"},"SK":{"S":"X"},"a":{"Z":"1"}}}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BAD#4"},"SK":{"S":"X"},"bin":{"B":"***"}}}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BAD#5"},"SK":{"S":"X"},"s":{"S":"nul\u0000here"}}}"#.to_string(),
        r#"{"Item":{"SK":{"S":"X"}}}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BAD#7"},"SK":{"S":"X"},"n":{"N":"12.3.4"}}}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BAD#8"},"SK":{"S":"X"}}}"#.to_string(),
    ];
    add_data_file(&mut fixture.export, &bad)?;

    // max_rejects 0: the first committed reject stops the run, which fails saying why.
    let report = migrate_in_process(&fixture, small_chunks(3), false).await?;
    assert!(!report.verified());
    assert!(
        report.reason().contains("over max_rejects"),
        "{}",
        report.reason()
    );
    assert!(report.rows_rejected >= 1);

    // Raising max_rejects and re-running finishes the same run without loading anything twice.
    let mut settings = small_chunks(3);
    settings.load.max_rejects = 6;
    let report = migrate_in_process(&fixture, settings, false).await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!((report.rows_loaded, report.rows_rejected), (402, 6));
    assert_eq!(
        query_i64(&fixture.url, "SELECT count(*) FROM ferry.rejects").await?,
        6
    );
    let client = connect(&fixture.url).await?;
    let rejects: Vec<(i64, String, Vec<u8>)> = client
        .query(
            "SELECT line_no, reason, raw_line FROM ferry.rejects ORDER BY line_no",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let lines: Vec<i64> = rejects.iter().map(|r| r.0).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
    for (want, (_, reason, _)) in [
        "malformed line",
        "unknown type descriptor",
        "invalid base64",
        "U+0000",
        "missing key attribute \"PK\"",
        "invalid number",
    ]
    .iter()
    .zip(&rejects)
    {
        assert!(reason.contains(want), "{reason} should say {want}");
    }
    assert_eq!(rejects[0].2, bad[1].as_bytes());

    let rejected = ["BAD#3", "BAD#4", "BAD#5", "BAD#7"];
    assert_eq!(
        assert_fixture_matches(&fixture, "AppTable", &rejected).await?,
        402
    );
    Ok(())
}

async fn corrupt_files_fail_their_shard_naming_the_file(target: TestTarget) -> anyhow::Result<()> {
    // A truncated gzip stream (with a manifest that matches its bytes).
    let fx = fixture_on(target, "e2e_truncated", &gen_options(5, 3_000, 3)).await?;
    let victim = fx.export.data_files[1].path.clone();
    let bytes = std::fs::read(&victim)?;
    std::fs::write(&victim, &bytes[..bytes.len() * 2 / 3])?;
    rewrite_manifest(&fx.export)?;
    let report = migrate_in_process(&fx, small_chunks(200), false).await?;
    assert!(!report.verified());
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(report.reason().contains(&name), "{}", report.reason());
    assert!(report.reason().contains("gzip"), "{}", report.reason());
    assert_eq!(report.shards_reconciled, report.shards_total - 1);

    // Bytes that differ from the manifest's MD5.
    let fx = fixture_on(target, "e2e_md5", &gen_options(6, 1_000, 2)).await?;
    let victim = fx.export.data_files[0].path.clone();
    let mut bytes = std::fs::read(&victim)?;
    bytes.extend_from_slice(&[
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]); // an empty gzip member
    std::fs::write(&victim, &bytes)?;
    let report = migrate_in_process(&fx, small_chunks(200), false).await?;
    assert!(!report.verified());
    assert!(
        report.reason().contains("MD5 mismatch"),
        "{}",
        report.reason()
    );
    assert!(
        report
            .reason()
            .contains(&victim.file_name().unwrap().to_string_lossy().to_string()),
        "{}",
        report.reason()
    );

    // A manifest whose itemCount disagrees with the file.
    let mut fx = fixture_on(target, "e2e_count", &gen_options(8, 1_000, 2)).await?;
    fx.export.data_files[0].item_count += 1;
    rewrite_manifest(&fx.export)?;
    let report = migrate_in_process(&fx, small_chunks(200), false).await?;
    assert!(!report.verified());
    assert!(
        report.reason().contains("item count mismatch"),
        "{}",
        report.reason()
    );
    Ok(())
}

async fn an_export_without_manifest_is_unverified_unless_allowed(
    target: TestTarget,
) -> anyhow::Result<()> {
    let fixture = fixture_on(
        target,
        "e2e_unverified",
        &GenOptions {
            seed: 9,
            items: 500,
            files: 2,
            write_manifest: false,
            checksum_ext: ChecksumExt::Checksum,
            ..GenOptions::default()
        },
    )
    .await?;
    let report = migrate_path(
        &fixture.url,
        fixture.dir.path(),
        small_chunks(100),
        false,
        Some("loose"),
    )
    .await?;
    assert!(!report.verified());
    assert!(
        report.reason().contains("--allow-unverified"),
        "{}",
        report.reason()
    );
    assert_eq!(report.rows_loaded, 500);
    let report = migrate_path(
        &fixture.url,
        fixture.dir.path(),
        small_chunks(100),
        true,
        Some("loose"),
    )
    .await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(assert_fixture_matches(&fixture, "loose", &[]).await?, 500);
    Ok(())
}

async fn a_table_that_does_not_fit_is_refused_before_loading(
    target: TestTarget,
) -> anyhow::Result<()> {
    let fixture = fixture_on(target, "e2e_table_checks", &gen_options(12, 300, 1)).await?;
    let client = connect(&fixture.url).await?;
    client
        .batch_execute("CREATE TABLE \"AppTable\" (\"PK\" TEXT, \"SK\" INT8, attrs JSONB)")
        .await?;
    let err = migrate_in_process(&fixture, Settings::default(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not fit") && err.contains("\"SK\" is int8"),
        "{err}"
    );
    assert_eq!(
        query_i64(&fixture.url, "SELECT count(*) FROM ferry.shards").await?,
        0
    );

    // A table holding rows that are not this run's is refused without --append.
    client.batch_execute("DROP TABLE \"AppTable\"").await?;
    let report = migrate_in_process(&fixture, Settings::default(), false).await?;
    assert!(report.verified(), "{}", report.to_text());
    client
        .batch_execute("DELETE FROM ferry.shards; DELETE FROM ferry.runs")
        .await?;
    let err = migrate_in_process(&fixture, Settings::default(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already holds rows") && err.contains("--append"),
        "{err}"
    );
    assert_eq!(
        query_i64(&fixture.url, "SELECT count(*) FROM ferry.shards").await?,
        0
    );
    assert_eq!(
        query_i64(&fixture.url, "SELECT count(*) FROM \"AppTable\"").await?,
        300
    );
    Ok(())
}

async fn a_value_of_another_type_spills_to_overflow_under_its_name(
    target: TestTarget,
) -> anyhow::Result<()> {
    let mut fixture = fixture_on(target, "e2e_spill", &gen_options(13, 200, 2)).await?;
    add_data_file(
        &mut fixture.export,
        &[r#"{"Item":{"PK":{"S":"V#1"},"SK":{"S":"A"},"v":{"N":"1.25"}}}"#.to_string()],
    )?;
    add_data_file(
        &mut fixture.export,
        &[
            r#"{"Item":{"PK":{"S":"V#2"},"SK":{"S":"A"},"v":{"N":"-7"}}}"#.to_string(),
            r#"{"Item":{"PK":{"S":"V#3"},"SK":{"S":"A"},"v":{"S":"seven"}}}"#.to_string(),
            r#"{"Item":{"PK":{"S":"V#4"},"SK":{"S":"A"},"v":{"NULL":true}}}"#.to_string(),
        ],
    )?;
    // One sampled item per file: `v` looks like a stable number column.
    let mut settings = small_chunks(50);
    settings.mapping.sample_items = 1;
    let report = migrate_in_process(&fixture, settings, false).await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.values_spilled, 1);
    let mut rows = Vec::new();
    for pk in ["V#1", "V#2", "V#3", "V#4"] {
        let v = query_text(
            &fixture.url,
            &format!("SELECT v FROM \"AppTable\" WHERE \"PK\" = '{pk}'"),
        )
        .await?;
        let attrs = query_text(
            &fixture.url,
            &format!("SELECT attrs FROM \"AppTable\" WHERE \"PK\" = '{pk}'"),
        )
        .await?;
        let attrs: Option<serde_json::Value> =
            attrs.map(|a| serde_json::from_str(&a)).transpose()?;
        rows.push((pk, v, attrs));
    }
    assert_eq!(
        rows,
        vec![
            ("V#1", Some("1.25".into()), None),
            ("V#2", Some("-7".into()), None),
            ("V#3", None, Some(serde_json::json!({"v": "seven"}))),
            ("V#4", None, Some(serde_json::json!({"v": null}))),
        ]
    );
    assert_fixture_matches(&fixture, "AppTable", &[]).await?;
    Ok(())
}

/// Loads a fresh export on PostgreSQL with a forced load path; checks that the run verified,
/// used that path, and that the table equals the source.
async fn forced_path(
    name: &str,
    copy_format: ferry_shared::config::CopyFormat,
    expected_path: &str,
    items: u64,
) -> anyhow::Result<(
    ferry_tests::harness::Fixture,
    ferry_coordinator::report::Report,
)> {
    let fixture = fixture(name, &gen_options(7, items, 3)).await?;
    let mut settings = small_chunks(400);
    settings.load.copy_format = copy_format;
    let report = migrate_in_process(&fixture, settings, false).await?;
    assert!(report.verified(), "{}", report.to_text());
    assert!(
        report.load_path.contains(expected_path),
        "{}",
        report.load_path
    );
    assert_eq!(
        assert_table_matches(&fixture.url, "AppTable", &fixture.export.export_dir).await?,
        items as usize
    );
    Ok((fixture, report))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_autocommit_path_loads_every_value_exactly_too() -> anyhow::Result<()> {
    // The HeliosDB load path (CSV COPY in autocommit over the simple protocol, key-checked
    // checkpoint), forced on PostgreSQL: the same table, value by value.
    let (fixture, report) = forced_path(
        "e2e_csv_path",
        ferry_shared::config::CopyFormat::Csv,
        "CSV COPY in autocommit",
        3_000,
    )
    .await?;
    // The text-format reader used for HeliosDB agrees, on PostgreSQL, with the to_jsonb one.
    assert_eq!(
        assert_run_matches_text(
            &fixture.url,
            &report.run_id,
            &fixture.export.export_dir,
            &[]
        )
        .await?,
        3_000
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insert_fallback_loads_every_value_exactly_too() -> anyhow::Result<()> {
    // The last rung of the load ladder: multi-row INSERT with text parameters.
    forced_path(
        "e2e_insert_path",
        ferry_shared::config::CopyFormat::Insert,
        "multi-row INSERT",
        1_500,
    )
    .await?;
    Ok(())
}

/// Runs each case against PostgreSQL and against HeliosDB.
macro_rules! on_both_targets {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(super::TestTarget::Postgres).await
                }
            )*
        }
        mod heliosdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(super::TestTarget::HeliosDb).await
                }
            )*
        }
    };
}

on_both_targets!(
    a_migration_loads_every_item_exactly_with_its_values,
    the_output_is_the_same_for_every_chunk_and_block_size,
    bad_lines_are_rejected_with_line_numbers_and_reasons,
    corrupt_files_fail_their_shard_naming_the_file,
    an_export_without_manifest_is_unverified_unless_allowed,
    a_table_that_does_not_fit_is_refused_before_loading,
    a_value_of_another_type_spills_to_overflow_under_its_name,
);

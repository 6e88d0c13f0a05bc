//! End-to-end, crash and race tests against a real HeliosDB server (`heliosdb-nano`, started by
//! the harness), compared with the source export value by value. On HeliosDB every value is
//! exact or a counted overflow/reject: a value the server changed fails the comparison.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::gen::{add_data_file, generate_export, rewrite_lines, GenOptions};
use ferry_tests::harness::{
    assert_run_matches_text, binary, connect, gen_options, migrate_path, run_coordinator,
    small_chunks, stderr_of,
};
use ferry_tests::helios::{heliosdb_binary, HeliosServer};

const EXIT_FAILPOINT: i32 = 86;

async fn scalar(url: &str, sql: &str) -> anyhow::Result<String> {
    let client = connect(url).await?;
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or_default().to_string());
        }
    }
    anyhow::bail!("no row from {sql}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_into_heliosdb_is_exact() -> anyhow::Result<()> {
    let server = HeliosServer::start()?;
    let dir = tempfile::tempdir()?;
    let export = generate_export(dir.path(), &gen_options(7, 4_000, 3))?;
    let report = migrate_path(&server.url(), dir.path(), small_chunks(600), false, None).await?;
    assert!(report.verified(), "{}", report.to_text());
    assert!(
        report.load_path.contains("HeliosDB"),
        "{}",
        report.load_path
    );
    assert_eq!(
        (report.rows_loaded, report.table_rows),
        (4_000, Some(4_000))
    );
    assert_eq!(
        assert_run_matches_text(&server.url(), &report.run_id, &export.export_dir, &[]).await?,
        4_000
    );
    // A 38-digit number and 1E+125 survive exactly in the overflow JSONB.
    let attrs = scalar(
        &server.url(),
        "SELECT attrs FROM \"AppTable\" WHERE \"PK\" = 'EDGE#0'",
    )
    .await?;
    assert!(
        attrs.contains("12345678901234567890123456789012345678"),
        "{attrs}"
    );
    assert!(attrs.contains(&format!("1{}", "0".repeat(125))), "{attrs}");
    // A second run is a no-op.
    let again = migrate_path(&server.url(), dir.path(), small_chunks(600), false, None).await?;
    assert!(
        again.already_complete && again.verified(),
        "{}",
        again.to_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_heliosdb_would_round_stay_exact_in_overflow() -> anyhow::Result<()> {
    let server = HeliosServer::start()?;
    let dir = tempfile::tempdir()?;
    let mut export = generate_export(dir.path(), &gen_options(13, 200, 2))?;
    add_data_file(
        &mut export,
        &[r#"{"Item":{"PK":{"S":"V#1"},"SK":{"S":"A"},"v":{"N":"1.25"}}}"#.to_string()],
    )?;
    add_data_file(
        &mut export,
        &[
            r#"{"Item":{"PK":{"S":"V#2"},"SK":{"S":"A"},"v":{"N":"-7"}}}"#.to_string(),
            r#"{"Item":{"PK":{"S":"V#3"},"SK":{"S":"A"},"v":{"N":"-123456.000000000000000000000000000001"}}}"#.to_string(),
            r#"{"Item":{"PK":{"S":"V#4"},"SK":{"S":"A"},"v":{"N":"79228162514264337593543950336"}}}"#.to_string(),
        ],
    )?;
    let mut settings = small_chunks(50);
    settings.mapping.sample_items = 1;
    let report = migrate_path(&server.url(), dir.path(), settings, false, None).await?;
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(
        report.values_spilled, 2,
        "the two numbers a 96-bit decimal cannot hold"
    );
    assert_eq!(
        scalar(
            &server.url(),
            "SELECT v FROM \"AppTable\" WHERE \"PK\" = 'V#1'"
        )
        .await?,
        "1.25"
    );
    let spilled = scalar(
        &server.url(),
        "SELECT attrs FROM \"AppTable\" WHERE \"PK\" = 'V#3'",
    )
    .await?;
    assert!(
        spilled.contains("-123456.000000000000000000000000000001"),
        "{spilled}"
    );
    assert_run_matches_text(&server.url(), &report.run_id, &export.export_dir, &[]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_between_every_step_on_heliosdb_resume_exactly_once() -> anyhow::Result<()> {
    for (i, point) in [
        "after_read",
        "after_copy",
        "after_checkpoint",
        "after_commit",
    ]
    .iter()
    .enumerate()
    {
        let server = HeliosServer::start()?;
        let dir = tempfile::tempdir()?;
        let export = generate_export(dir.path(), &gen_options(20 + i as u64, 2_000, 2))?;
        // A non-ASCII attribute name, made a column: HeliosDB lists it in its catalog as its
        // UTF-8 bytes read as Latin-1, and a resumed run once refused the table it had made as
        // "column … is missing" (found by tests/tests/sequences.rs).
        rewrite_lines(&export, |line| {
            line.replacen(r#"{"Item":{"#, r#"{"Item":{"ünïcode näme €":{"S":"ü"},"#, 1)
        })?;
        let export_arg = dir.path().display().to_string();
        let url = server.url();
        let args = [
            "migrate",
            "--export",
            export_arg.as_str(),
            "--target",
            url.as_str(),
            "--key",
            "PK,SK",
        ];
        let failpoint = format!("{point}=exit@3");
        let env = [
            ("FERRY_LOAD__CHUNK_LINES", "200"),
            ("FERRY_LOAD__BLOCK_LINES", "50"),
            ("FERRY_FAILPOINTS", failpoint.as_str()),
        ];
        let output = run_coordinator(&args, &env)?;
        assert_eq!(
            output.status.code(),
            Some(EXIT_FAILPOINT),
            "{point}: {}",
            stderr_of(&output)
        );
        let output = run_coordinator(&args, &env[..2])?;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{point} resume: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr_of(&output)
        );
        let run_id = scalar(&url, "SELECT run_id FROM ferry.runs").await?;
        assert_eq!(
            assert_run_matches_text(&url, &run_id, &export.export_dir, &[]).await?,
            2_000,
            "{point}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_racing_workers_on_heliosdb_load_each_item_once() -> anyhow::Result<()> {
    let server = HeliosServer::start()?;
    let dir = tempfile::tempdir()?;
    let export = generate_export(
        dir.path(),
        &GenOptions {
            seed: 60,
            items: 8_000,
            files: 2,
            ..GenOptions::default()
        },
    )?;
    let url = server.url();
    let export_arg = dir.path().display().to_string();
    let env = [
        ("FERRY_LOAD__CHUNK_LINES", "200"),
        ("FERRY_LOAD__BLOCK_LINES", "50"),
    ];
    let plan = run_coordinator(
        &[
            "plan",
            "--export",
            &export_arg,
            "--target",
            &url,
            "--key",
            "PK,SK",
        ],
        &env,
    )?;
    assert_eq!(plan.status.code(), Some(0), "{}", stderr_of(&plan));
    let run_id = String::from_utf8_lossy(&plan.stdout).trim().to_string();
    let worker = || {
        Command::new(binary("ferry-worker"))
            .args(["--target", &url, "--run-id", &run_id, "--workers", "2"])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    };
    // One worker killed with SIGKILL mid-load, then three racing on every shard.
    let mut victim = worker()?;
    let started = Instant::now();
    while scalar(
        &url,
        "SELECT COALESCE(sum(committed_lines), 0) FROM ferry.shards",
    )
    .await?
    .parse::<i64>()?
        == 0
    {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.kill()?;
    victim.wait()?;
    let racers: Vec<_> = (0..3).map(|_| worker()).collect::<Result<_, _>>()?;
    for racer in racers {
        let output = racer.wait_with_output()?;
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    }
    let status = run_coordinator(
        &["status", "--target", &url, "--run-id", &run_id, "--json"],
        &[],
    )?;
    assert_eq!(status.status.code(), Some(0), "{}", stderr_of(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(status["rows_loaded"], 8_000);
    assert_eq!(
        assert_run_matches_text(&url, &run_id, &export.export_dir, &[]).await?,
        8_000
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_needs_no_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let export = generate_export(&dir.path().join("export"), &gen_options(70, 1_500, 2))?;
    let data_dir = dir.path().join("ferry-data");
    let args = [
        "migrate",
        "--export",
        export.root.to_str().unwrap(),
        "--key",
        "PK,SK",
    ];
    let bin = heliosdb_binary()?;
    let env = [
        ("FERRY_TARGET__DATA_DIR", data_dir.to_str().unwrap()),
        ("FERRY_HELIOSDB_BIN", bin.to_str().unwrap()),
    ];
    let output = run_coordinator(&args, &env)?;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
    assert!(
        stderr_of(&output).contains("psql postgres://"),
        "{}",
        stderr_of(&output)
    );
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        text.contains("1500 rows loaded by this run, 1500 rows in the table"),
        "{text}"
    );
    assert!(text.contains("HeliosDB"), "{text}");
    // The printed report is short (one line for the four clean shards); the data folder keeps the
    // whole report, every shard on its line.
    assert!(
        text.contains("all 4 shards reconciled with nothing to look at (1500 items)"),
        "{text}"
    );
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&data_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let report_file = files
        .iter()
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("ferry-report-") && name.ends_with(".txt")
        })
        .unwrap_or_else(|| panic!("no report file among {files:?}"));
    assert!(
        text.contains(&format!("report  {} (every shard)", report_file.display())),
        "{text}"
    );
    let whole = std::fs::read_to_string(report_file)?;
    assert_eq!(
        whole
            .lines()
            .filter(|l| l.trim_end().ends_with(" yes"))
            .count(),
        4,
        "{whole}"
    );
    // The server was stopped; the data stays. A second run starts it again and finds the run done;
    // --all prints every shard, --report-file writes where it is told.
    let elsewhere = dir.path().join("report.txt");
    let mut again = args.to_vec();
    again.extend(["--all", "--report-file", elsewhere.to_str().unwrap()]);
    let output = run_coordinator(&again, &env)?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(text.contains("already complete"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_end().ends_with(" yes"))
            .count(),
        4,
        "{text}"
    );
    assert!(std::fs::read_to_string(&elsewhere)?.contains("shards  4 of 4 reconciled"));
    Ok(())
}

/// A run planned by a Ferry that still made a dotted attribute name a column (before 25a481b):
/// HeliosDB stores such a column's values and reads them back as NULL. Resuming the run there is
/// refused, naming the column and the way out, and `export-back` declares the column's values
/// missing instead of passing the NULLs off as the items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_planned_with_a_dotted_column_does_not_load_into_heliosdb() -> anyhow::Result<()> {
    use ferry_shared::schema::{ColumnSpec, DdbType, PgType, TableSchema};
    let server = HeliosServer::start()?;
    let url = server.url();
    let dir = tempfile::tempdir()?;
    let export = generate_export(&dir.path().join("export"), &gen_options(71, 600, 2))?;
    let export_arg = export.root.display().to_string();
    let planned = run_coordinator(
        &[
            "plan",
            "--export",
            &export_arg,
            "--target",
            &url,
            "--key",
            "PK,SK",
        ],
        &[],
    )?;
    assert_eq!(planned.status.code(), Some(0), "{}", stderr_of(&planned));
    // The run as the older Ferry planned it: a NUMERIC column "tax.rate" in its schema and table.
    let client = connect(&url).await?;
    let row = client
        .query_one("SELECT run_id, schema_json FROM ferry.runs", &[])
        .await?;
    let (run_id, schema_json): (String, String) = (row.get(0), row.get(1));
    let mut schema: TableSchema = serde_json::from_str(&schema_json)?;
    schema.columns.push(ColumnSpec {
        name: "tax.rate".into(),
        ddb_type: DdbType::N,
        pg_type: PgType::Numeric,
        is_key: false,
    });
    client
        .execute(
            "UPDATE ferry.runs SET schema_json = $1::text WHERE run_id = $2::text",
            &[&serde_json::to_string(&schema)?, &run_id],
        )
        .await?;
    client
        .batch_execute(&format!("DROP TABLE \"{}\"", schema.table))
        .await?;
    client.batch_execute(&schema.create_table_sql()).await?;

    let refused = migrate_path(&url, &export.root, small_chunks(200), false, None).await;
    let message = format!("{:#}", refused.expect_err("the run must not load"));
    assert!(
        message.contains("\"tax.rate\"") && message.contains("--run-id"),
        "{message}"
    );
    assert_eq!(
        scalar(&url, "SELECT count(*) FROM \"AppTable\"").await?,
        "0"
    );

    let out_dir = dir.path().join("back");
    let output = run_coordinator(
        &[
            "export-back",
            "--target",
            &url,
            "--run-id",
            &run_id,
            "--output",
            &out_dir.display().to_string(),
            "--json",
        ],
        &[],
    )?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let unreadable: Vec<&serde_json::Value> = summary["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .filter(|d| d["class"] == "unreadable_column")
        .collect();
    assert_eq!(unreadable.len(), 1, "{summary}");
    assert_eq!(unreadable[0]["column"], "tax.rate", "{summary}");
    assert_eq!(unreadable[0]["table"], "AppTable", "{summary}");
    Ok(())
}

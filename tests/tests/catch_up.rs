//! Catching up with incremental exports, on PostgreSQL and on HeliosDB: a table's history written
//! the way DynamoDB exports it (boto3-typed items; a full export, three windows, one of them in
//! Amazon Ion and in the NEW_IMAGE view), applied to a routed run and a table-mode run, the
//! table-mode catch-up killed with `kill -9` in the middle of a window and resumed by two racing
//! catch-ups at once; every table must then equal a full load of the final state, value by value.
//! The ledger's refusals (an incremental export before its full run, a gap, an overlap, a window
//! applied twice) are checked on the way.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_coordinator::catch_up::{catch_up, CatchUpReport, CatchUpRequest};
use ferry_shared::config::Settings;
use ferry_tests::harness::{
    assert_run_matches_text, assert_table_matches, binary, connect, empty_target, migrate_path,
    query_text, run_coordinator, stderr_of, TestTarget,
};
use ferry_tests::history::{table_text, History, ROUTED_CONFIG, ROUTED_TABLES};

fn routed_settings(dir: &std::path::Path) -> anyhow::Result<Settings> {
    let path = dir.join("routed.toml");
    std::fs::write(&path, ROUTED_CONFIG)?;
    let mut settings = ferry_shared::config::load_settings(Some(&path))?;
    settings.load.chunk_lines = 40.try_into()?;
    settings.load.block_lines = 13.try_into()?;
    Ok(settings)
}

fn table_settings() -> anyhow::Result<Settings> {
    let mut settings = Settings::default();
    settings.load.chunk_lines = 40.try_into()?;
    settings.load.block_lines = 13.try_into()?;
    Ok(settings)
}

async fn catch_up_here(
    url: &str,
    exports: &[&std::path::Path],
    run_id: Option<&str>,
    settings: Settings,
) -> anyhow::Result<CatchUpReport> {
    let request = CatchUpRequest {
        exports: exports.iter().map(|p| p.display().to_string()).collect(),
        base_run_id: run_id.map(str::to_string),
        target_url: url.to_string(),
        // One loader: the window's files apply in name order (the email move meets a taken value).
        workers: Some(1),
        settings,
        poll_interval: Duration::from_secs(1),
    };
    Ok(catch_up(&request, None).await?)
}

/// The refusal's text, which must name both windows (or the window and the run).
async fn refused(
    url: &str,
    exports: &[&std::path::Path],
    run_id: Option<&str>,
    settings: Settings,
) -> String {
    match catch_up_here(url, exports, run_id, settings).await {
        Ok(report) => panic!("expected a refusal, got {}", report.to_text()),
        Err(e) => format!("{e:#}"),
    }
}

async fn ledger_count(url: &str, sql: &str) -> anyhow::Result<i64> {
    Ok(query_text(url, sql)
        .await?
        .unwrap_or_default()
        .parse()
        .unwrap_or(0))
}

async fn history_is_caught_up_exactly(target: TestTarget) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let history = History::generate(dir.path(), 300, 12)?;
    let (url, _server) = empty_target(target, "catchup").await?;
    let w = |n| history.window_id(n);

    // An incremental export before its full run.
    let message = refused(
        &url,
        &[&history.windows()],
        None,
        routed_settings(dir.path())?,
    )
    .await;
    assert!(
        message.contains(&w(1)) && message.contains("applies only after the full run it follows"),
        "{message}"
    );

    // The full runs: routed (the guide's kind of config) and table mode.
    let routed = migrate_path(
        &url,
        &history.full(),
        routed_settings(dir.path())?,
        false,
        None,
    )
    .await?;
    assert!(routed.verified(), "{}", routed.to_text());
    let plain = migrate_path(
        &url,
        &history.full(),
        table_settings()?,
        false,
        Some("shop_items"),
    )
    .await?;
    assert!(plain.verified(), "{}", plain.to_text());

    // Two full runs of the table: the windows must say which.
    let message = refused(
        &url,
        &[&history.windows()],
        None,
        routed_settings(dir.path())?,
    )
    .await;
    assert!(message.contains("--run-id"), "{message}");
    // A gap: window 2 right after the full run.
    let message = refused(
        &url,
        &[&history.window(2)],
        Some(&routed.run_id),
        routed_settings(dir.path())?,
    )
    .await;
    assert!(
        message.starts_with("gap") && message.contains(&w(2)) && message.contains(&routed.run_id),
        "{message}"
    );

    // The routed run catches up through all three windows.
    let report = catch_up_here(
        &url,
        &[&history.windows()],
        Some(&routed.run_id),
        routed_settings(dir.path())?,
    )
    .await?;
    assert!(report.complete(), "{}", report.to_text());
    assert_eq!(report.windows.len(), 3, "{}", report.to_text());
    for (line, stats) in report
        .windows
        .iter()
        .zip(history.stats["windows"].as_array().unwrap())
    {
        assert_eq!(line.outcome, "applied", "{}", report.to_text());
        assert_eq!(
            line.applied + line.rejected + line.filtered,
            stats["records"].as_u64().unwrap(),
            "{}",
            report.to_text()
        );
        assert_eq!(line.rejected, 0, "{}", report.to_text());
    }
    let deferred: u64 = report.windows.iter().map(|w| w.deferred.applied).sum();
    assert!(
        deferred >= 1,
        "the email moving between users must meet a taken value: {}",
        report.to_text()
    );
    assert_eq!(
        report.caught_up_to.as_deref(),
        Some("2026-11-01T03:00:00.000Z")
    );

    // Refusals after the windows: the first window exported again, and one overlapping it.
    let message = refused(
        &url,
        &[&history.window_again()],
        Some(&routed.run_id),
        routed_settings(dir.path())?,
    )
    .await;
    assert!(
        message.contains("already applied as window") && message.contains(&w(1)),
        "{message}"
    );
    let message = refused(
        &url,
        &[&history.window_overlapping()],
        Some(&routed.run_id),
        routed_settings(dir.path())?,
    )
    .await;
    assert!(
        message.starts_with("overlap") && message.contains(&w(1)),
        "{message}"
    );
    // The same windows again: nothing to do, each says so.
    let again = catch_up_here(
        &url,
        &[&history.windows()],
        Some(&routed.run_id),
        routed_settings(dir.path())?,
    )
    .await?;
    assert!(again.windows.iter().all(|w| w.outcome == "already applied"));

    // The table-mode run, through the binary, killed with -9 in the middle of window 2.
    let args = [
        "catch-up",
        "--export",
        &history.windows().display().to_string(),
        "--target",
        &url,
        "--run-id",
        &plain.run_id,
        "--workers",
        "1",
    ]
    .map(str::to_string);
    let mut child = Command::new(binary("ferry-coordinator"))
        .args(&args)
        .env("FERRY_LOAD__CHUNK_LINES", "20")
        .env("FERRY_LOAD__BLOCK_LINES", "7")
        // Every chunk waits inside its transaction, after its checkpoint moved, before COMMIT.
        .env("FERRY_FAILPOINTS", "after_checkpoint=sleep150@1+")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let window_2_progress = format!(
        "SELECT COALESCE(sum(s.committed_lines), 0)::int8 FROM ferry.shards s JOIN ferry.windows w ON w.run_id = s.run_id WHERE w.base_run_id = '{}' AND w.seq = 2",
        plain.run_id
    );
    let started = Instant::now();
    loop {
        assert!(
            child.try_wait()?.is_none(),
            "catch-up ended before the kill"
        );
        if ledger_count(&url, &window_2_progress).await.unwrap_or(0) >= 40 {
            child.kill()?; // SIGKILL, mid-window (and most likely mid-transaction)
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait()?;
    let state = query_text(
        &url,
        &format!(
            "SELECT state FROM ferry.windows WHERE base_run_id = '{}' AND seq = 2",
            plain.run_id
        ),
    )
    .await?;
    assert_eq!(state.as_deref(), Some("applying"));
    // Two catch-ups resume it at once (racing appliers on every shard left, and on finishing each
    // window), each chunk held inside its transaction so they overlap.
    let racers = (0..2)
        .map(|_| {
            Command::new(binary("ferry-coordinator"))
                .args(&args)
                .env("FERRY_LOAD__CHUNK_LINES", "20")
                .env("FERRY_LOAD__BLOCK_LINES", "7")
                .env("FERRY_FAILPOINTS", "after_checkpoint=sleep20@1+")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut texts = Vec::new();
    for racer in racers {
        let output = racer.wait_with_output()?;
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        texts.push(String::from_utf8_lossy(&output.stdout).to_string());
    }
    assert!(
        texts.iter().all(|t| t.contains("already applied")),
        "window 1 was complete before the race: {texts:?}"
    );
    // Window 3 applied once, whoever finished it; the other found it done.
    let rerun = run_coordinator(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])?;
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr_of(&rerun));
    let text = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        !text.contains(": applied") && text.matches("already applied").count() == 3,
        "{text}"
    );

    // Every table equals a full load of the final state.
    match target {
        TestTarget::Postgres => {
            assert_table_matches(&url, "shop_items", &history.final_export_dir()).await?;
        }
        TestTarget::HeliosDb => {
            assert_run_matches_text(&url, &plain.run_id, &history.final_export_dir(), &[]).await?;
        }
    }
    let (oracle_url, _oracle_server) = empty_target(target, "catchup_oracle").await?;
    let oracle = migrate_path(
        &oracle_url,
        &history.final_state(),
        routed_settings(dir.path())?,
        false,
        None,
    )
    .await?;
    assert!(oracle.verified(), "{}", oracle.to_text());
    let (caught_up, fresh) = (connect(&url).await?, connect(&oracle_url).await?);
    let finals = &history.stats["final"];
    for table in ROUTED_TABLES {
        let got = table_text(&caught_up, table).await?;
        let want = table_text(&fresh, table).await?;
        assert_eq!(got.len(), want.len(), "table {table}: row count");
        for (row, (got, want)) in got.iter().zip(&want).enumerate() {
            assert_eq!(got, want, "table {table}, row {row}");
        }
    }
    let count = |table: &str| {
        let url = url.clone();
        let table = table.to_string();
        async move { ledger_count(&url, &format!("SELECT count(*)::int8 FROM {table}")).await }
    };
    assert_eq!(
        count("users").await? as u64,
        finals["users"].as_u64().unwrap()
    );
    assert_eq!(
        (count("orders").await? + count("archived_orders").await?) as u64,
        finals["orders"].as_u64().unwrap()
    );
    assert_eq!(
        count("archived_orders").await? as u64,
        finals["archived"].as_u64().unwrap()
    );

    // `status` says how far behind the tables are.
    let output = run_coordinator(
        &["status", "--target", &url, "--run-id", &routed.run_id],
        &[],
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("are at 2026-11-01T03:00:00.000Z") && text.contains("3 window(s) applied"),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_is_caught_up_exactly_on_postgres() -> anyhow::Result<()> {
    history_is_caught_up_exactly(TestTarget::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_is_caught_up_exactly_on_heliosdb() -> anyhow::Result<()> {
    history_is_caught_up_exactly(TestTarget::HeliosDb).await
}

/// The applier's statements change exactly the keys they list, with exactly the values given,
/// inside the chunk's transaction: on HeliosDB they carry literal values and delete through a
/// search-tree predicate, so keys whose order a server could see differently (case, accents,
/// combining marks, emoji, quotes, backslashes, prefixes, the empty string) are deleted and
/// upserted among 3,000 rows, and a `ROLLBACK` must leave every row as it was (HeliosDB's upsert
/// with `$n` parameters kept its updates after a rollback).
async fn applied_statements_are_exact(target: TestTarget) -> anyhow::Result<()> {
    use ferry_shared::schema::{ColumnSpec, DdbType, PgType, TableSchema};
    use ferry_worker::sink::apply::{apply_changes, Changes, Delete, TableSql, Upsert};
    use ferry_worker::sink::KeyValue;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let (url, _server) = empty_target(target, "apply_exact").await?;
    let client = connect(&url).await?;
    let heliosdb = target == TestTarget::HeliosDb;
    let column = |name: &str, is_key: bool| ColumnSpec {
        name: name.into(),
        ddb_type: DdbType::S,
        pg_type: PgType::Text,
        is_key,
    };
    let odd = [
        "",
        " ",
        "a",
        "A",
        "ä",
        "Ä",
        "a\u{308}",
        "é",
        "e\u{301}",
        "z",
        "Z",
        "ß",
        "ss",
        "日本",
        "😀",
        "a'b",
        "a''",
        "'",
        "back\\slash",
        "\\",
        "USER#1",
        "USER#10",
        "USER#2",
        "user#1",
        "$1",
        "?",
        "a,b",
        "(x)",
        "\t",
        "-- c",
        "/*",
        "NULL",
        "a;b",
        ";",
    ];
    for key_columns in [2usize, 1] {
        let table = format!("apply_exact_{key_columns}");
        let mut columns = vec![column("pk", true)];
        if key_columns == 2 {
            columns.push(column("sk", true));
        }
        columns.push(column("v", false));
        let schema = TableSchema {
            table: table.clone(),
            columns,
            overflow_column: "attrs".into(),
            nested_json: Default::default(),
            on_type_mismatch: Default::default(),
            numeric_limit: Default::default(),
            routing: None,
            provenance: false,
        };
        client.batch_execute(&schema.create_table_sql()).await?;
        // 3,000 keys: every odd string as a partition key with 94 sort keys (or alone, with a
        // suffix, for the one-column key).
        let mut rows: BTreeMap<Vec<String>, String> = BTreeMap::new();
        let mut n = 0u64;
        while rows.len() < 3_000 {
            let pk = odd[(n as usize) % odd.len()];
            let key = if key_columns == 2 {
                vec![
                    pk.to_string(),
                    format!("{}{}", odd[(n as usize / odd.len()) % odd.len()], n / 997),
                ]
            } else {
                vec![format!("{pk}{}", n / odd.len() as u64)]
            };
            rows.insert(key, format!("v{n} '{pk}'"));
            n += 1;
        }
        let value_of = |key: &[String], v: &str| -> Vec<Option<String>> {
            let mut values: Vec<Option<String>> = key.iter().cloned().map(Some).collect();
            values.push(Some(v.to_string()));
            values.push(None); // attrs
            values
        };
        let key_of = |key: &[String]| key.iter().cloned().map(KeyValue::Text).collect::<Vec<_>>();
        let raw: Arc<[u8]> = Arc::from(&b"{}"[..]);
        let inserts = Changes {
            upserts: rows
                .iter()
                .enumerate()
                .map(|(i, (k, v))| Upsert {
                    line_no: i as u64 + 1,
                    key: key_of(k),
                    values: value_of(k, v),
                    raw: raw.clone(),
                })
                .collect(),
            deletes: Vec::new(),
        };
        let sql = [TableSql::new(&schema, heliosdb)];
        client.batch_execute("BEGIN").await?;
        assert!(apply_changes(&client, &sql, &[inserts]).await?.is_empty());
        client.batch_execute("COMMIT").await?;
        // Every third key deleted (and 50 keys that are not there), every fifth updated with a
        // value full of quotes, and 100 new keys.
        let keys: Vec<Vec<String>> = rows.keys().cloned().collect();
        let mut changes = Changes::default();
        let mut expected = rows.clone();
        for (i, key) in keys.iter().enumerate() {
            if i % 3 == 0 {
                changes.deletes.push(Delete {
                    line_no: i as u64 + 1,
                    key: key_of(key),
                    raw: raw.clone(),
                });
                expected.remove(key);
            } else if i % 5 == 0 {
                let value = format!("it's \\'{i}'' ünï");
                changes.upserts.push(Upsert {
                    line_no: i as u64 + 1,
                    key: key_of(key),
                    values: value_of(key, &value),
                    raw: raw.clone(),
                });
                expected.insert(key.clone(), value);
            }
        }
        for i in 0..150u64 {
            let mut key: Vec<String> = vec![format!("{}new{i}", odd[i as usize % odd.len()])];
            if key_columns == 2 {
                key.push(format!("{}", i % 7));
            }
            if i < 50 {
                changes.deletes.push(Delete {
                    line_no: 10_000 + i,
                    key: key_of(&key),
                    raw: raw.clone(),
                });
            } else {
                changes.upserts.push(Upsert {
                    line_no: 10_000 + i,
                    key: key_of(&key),
                    values: value_of(&key, "new"),
                    raw: raw.clone(),
                });
                expected.insert(key, "new".into());
            }
        }
        // Applied and rolled back: nothing changed.
        client.batch_execute("BEGIN").await?;
        assert!(apply_changes(&client, &sql, &[changes.clone()])
            .await?
            .is_empty());
        client.batch_execute("ROLLBACK").await?;
        let after = read_values(&client, &table, key_columns).await?;
        let changed: Vec<_> = rows
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, v)| (k, v, after.get(k)))
            .take(5)
            .collect();
        let added: Vec<_> = after
            .keys()
            .filter(|k| !rows.contains_key(*k))
            .take(5)
            .collect();
        assert!(
            changed.is_empty() && added.is_empty() && after.len() == rows.len(),
            "{target:?} {table}: a rollback left changes ({} rows, {} before): {changed:?} added {added:?}",
            after.len(),
            rows.len()
        );
        // Applied and committed: exactly the expected rows.
        client.batch_execute("BEGIN").await?;
        assert!(apply_changes(&client, &sql, &[changes]).await?.is_empty());
        client.batch_execute("COMMIT").await?;
        let got = read_values(&client, &table, key_columns).await?;
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .take(5)
            .collect();
        assert!(
            wrong.is_empty(),
            "{target:?} {table}: rows not as expected: {wrong:?}"
        );
        assert_eq!(got.len(), expected.len(), "{target:?} {table}: rows left");
    }
    Ok(())
}

/// `table`'s rows: key columns → `v`, through the simple protocol.
async fn read_values(
    client: &tokio_postgres::Client,
    table: &str,
    key_columns: usize,
) -> anyhow::Result<std::collections::BTreeMap<Vec<String>, String>> {
    let order = if key_columns == 2 { "pk, sk" } else { "pk" };
    let mut got = std::collections::BTreeMap::new();
    for row in client
        .simple_query(&format!("SELECT {order}, v FROM {table}"))
        .await?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = row {
            let key: Vec<String> = (0..key_columns)
                .map(|c| row.get(c).unwrap_or_default().to_string())
                .collect();
            got.insert(key, row.get(key_columns).unwrap_or_default().to_string());
        }
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_statements_are_exact_on_postgres() -> anyhow::Result<()> {
    applied_statements_are_exact(TestTarget::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_statements_are_exact_on_heliosdb() -> anyhow::Result<()> {
    applied_statements_are_exact(TestTarget::HeliosDb).await
}

//! `verify --deep` (issue 28): every value proven against the digests the load recorded, on
//! PostgreSQL and HeliosDB. A clean run verifies (also on a sample of its chunks); then values
//! are changed behind Ferry's back, one row each way:
//! - one attribute of one row updated;
//! - a row deleted and inserted again with another value (and so without provenance);
//! - a number rounded;
//! - an element dropped from a set;
//!
//! (and, first, a row written by hand under a new key, found alone);
//!
//! and the command must fail (exit 1) naming each row's key and the attribute that changed, with
//! the export's line, and record the table as `differs` in `ferry.verifications`. With
//! `load.reject_lines = "omitted"` the keys and values are not shown.
//!
//! And in sequence with the other commands (what else may already be there): a load killed after
//! a chunk's COPY and resumed, a shard `reset` and loaded again, a second export `--append`ed into
//! the same table: both runs verify, each saying the other's rows are not its own.

use ferry_shared::schema::{PgType, TableSchema};
use ferry_tests::compare::parse_array_literal;
use ferry_tests::gen::{generate_export, rewrite_lines, GenOptions};
use ferry_tests::harness::{
    assert_exit, connect, empty_target, fixture_on, gen_options, migrate_in_process, query_text,
    run_coordinator, small_chunks, TestTarget,
};
use tokio_postgres::SimpleQueryMessage;

const TABLE: &str = "deep";

/// A SQL string literal (test code only: the product binds its values).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// An array literal of `elements`, every one quoted.
fn array_literal(elements: &[String]) -> String {
    let quoted: Vec<String> = elements
        .iter()
        .map(|e| format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// Rows of `sql` as text.
async fn rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let client = connect(url).await.unwrap();
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn execute(url: &str, sql: &str) {
    connect(url)
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

fn verify_deep(url: &str, run: &str, extra: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut args = vec!["verify", "--deep", "--target", url, "--run-id", run];
    args.extend_from_slice(extra);
    let out = run_coordinator(&args, env).unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The `WHERE` clause of the row keyed `(pk, sk)`.
fn key_where(pk: &str, sk: &str) -> String {
    format!("\"PK\" = {} AND \"SK\" = {}", literal(pk), literal(sk))
}

/// The first row (by key, after `skip` rows) whose `column` passes `keep`: its key and value.
async fn pick(
    url: &str,
    column: &str,
    skip: usize,
    keep: impl Fn(&str) -> bool,
) -> (String, String, String) {
    let all = rows(
        url,
        &format!(
            "SELECT \"PK\", \"SK\", \"{column}\" FROM {TABLE} WHERE \"{column}\" IS NOT NULL ORDER BY \"PK\", \"SK\""
        ),
    )
    .await;
    all.into_iter()
        .filter(|r| keep(r[2].as_deref().unwrap()))
        .nth(skip)
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].clone().unwrap(),
                r[2].clone().unwrap(),
            )
        })
        .unwrap_or_else(|| panic!("no row of {TABLE} has a suitable {column}"))
}

async fn tampering_is_found(target: TestTarget) {
    let fixture = fixture_on(target, "deep_verify", &gen_options(33, 3000, 3))
        .await
        .unwrap();
    let url = fixture.url.clone();
    let mut settings = small_chunks(500);
    settings.mapping.table = Some(TABLE.into());
    settings.mapping.min_presence = 0.05;
    let report = migrate_in_process(&fixture, settings, false).await.unwrap();
    assert!(report.verified(), "{}", report.reason());
    let run = query_text(
        &url,
        &format!("SELECT run_id FROM ferry.runs WHERE target_table = '{TABLE}'"),
    )
    .await
    .unwrap()
    .unwrap();
    let recorded = query_text(
        &url,
        &format!("SELECT sum(items)::text FROM ferry.chunk_digests WHERE run_id = '{run}'"),
    )
    .await
    .unwrap();
    assert_eq!(
        recorded.as_deref(),
        Some(report.rows_loaded.to_string().as_str()),
        "every loaded row is in a chunk digest"
    );

    // A clean run verifies, whole and sampled.
    let (code, text) = verify_deep(&url, &run, &[], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("every value matches what was loaded")
            && text.contains(&format!(
                "{TABLE}: verified — {} rows read",
                report.rows_loaded
            )),
        "{text}"
    );
    let (code, text) = verify_deep(&url, &run, &["--sample", "50%"], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("a sample of 50.0% of the chunks"), "{text}");

    // A row written by hand under a new key (no provenance): the only difference, named.
    execute(
        &url,
        &format!("INSERT INTO {TABLE} (\"PK\", \"SK\") VALUES ('HAND#1', '1')"),
    )
    .await;
    let (code, text) = verify_deep(&url, &run, &[], &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "holds rows the run did not load: rows without provenance (written outside Ferry): 1"
        ) && text.contains(
            r#"key (PK="HAND#1", SK="1"): a row without provenance (written outside Ferry)"#
        ),
        "{text}"
    );
    execute(
        &url,
        &format!("DELETE FROM {TABLE} WHERE \"PK\" = 'HAND#1'"),
    )
    .await;
    let (code, text) = verify_deep(&url, &run, &[], &[]);
    assert_eq!(code, 0, "{text}");

    // Columns to change, from the run's schema.
    let schema: TableSchema = serde_json::from_str(
        &query_text(
            &url,
            &format!("SELECT schema_json FROM ferry.runs WHERE run_id = '{run}'"),
        )
        .await
        .unwrap()
        .unwrap(),
    )
    .unwrap();
    let column_of = |want: &dyn Fn(PgType) -> bool| {
        schema
            .columns
            .iter()
            .find(|c| !c.is_key && want(c.pg_type))
            .map(|c| c.name.clone())
            .unwrap_or_else(|| panic!("no such column in {:?}", schema.columns))
    };
    let text_column = column_of(&|t| t == PgType::Text);
    let number_column = column_of(&|t| matches!(t, PgType::Numeric | PgType::NumericScaled { .. }));
    let set_column = column_of(&|t| matches!(t, PgType::TextArray | PgType::NumericArray));

    // 1. One attribute of one row.
    let (pk1, sk1, _) = pick(&url, &text_column, 0, |_| true).await;
    execute(
        &url,
        &format!(
            "UPDATE {TABLE} SET \"{text_column}\" = 'tampered' WHERE {}",
            key_where(&pk1, &sk1)
        ),
    )
    .await;
    // 2. A row deleted and inserted again with another value (no provenance).
    let (pk2, sk2, _) = pick(&url, &text_column, 7, |_| true).await;
    let names: Vec<String> = schema
        .copy_column_names()
        .into_iter()
        .filter(|n| n != ferry_shared::schema::PROVENANCE_COLUMN)
        .collect();
    let select: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let old = rows(
        &url,
        &format!(
            "SELECT {} FROM {TABLE} WHERE {}",
            select.join(", "),
            key_where(&pk2, &sk2)
        ),
    )
    .await
    .remove(0);
    let values: Vec<String> = names
        .iter()
        .zip(&old)
        .map(|(name, value)| {
            if name == &text_column {
                "'re-inserted'".to_string()
            } else {
                value.as_deref().map(literal).unwrap_or("NULL".into())
            }
        })
        .collect();
    execute(
        &url,
        &format!("DELETE FROM {TABLE} WHERE {}", key_where(&pk2, &sk2)),
    )
    .await;
    execute(
        &url,
        &format!(
            "INSERT INTO {TABLE} ({}) VALUES ({})",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", "),
            values.join(", ")
        ),
    )
    .await;
    // 3. A number rounded (one fraction digit dropped).
    let (pk3, sk3, number) = pick(&url, &number_column, 3, |v| {
        v.split_once('.')
            .is_some_and(|(_, f)| f.trim_end_matches('0').len() >= 2)
    })
    .await;
    let (int, fraction) = number.split_once('.').unwrap();
    let fraction = fraction.trim_end_matches('0');
    let rounded = format!("{int}.{}", &fraction[..fraction.len() - 1]);
    execute(
        &url,
        &format!(
            "UPDATE {TABLE} SET \"{number_column}\" = {} WHERE {}",
            literal(&rounded),
            key_where(&pk3, &sk3)
        ),
    )
    .await;
    // 4. A set element dropped.
    let (pk4, sk4, set) = pick(&url, &set_column, 5, |v| {
        parse_array_literal(v)
            .map(|e| e.len() >= 2)
            .unwrap_or(false)
    })
    .await;
    let elements = parse_array_literal(&set).unwrap();
    execute(
        &url,
        &format!(
            "UPDATE {TABLE} SET \"{set_column}\" = {} WHERE {}",
            literal(&array_literal(&elements[1..])),
            key_where(&pk4, &sk4)
        ),
    )
    .await;

    let (code, text) = verify_deep(&url, &run, &[], &[]);
    eprintln!("{text}");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("DIFFERENCES FOUND"), "{text}");
    let line_of = |pk: &str, what: &str| {
        text.lines()
            .find(|l| l.contains(&format!("PK={pk:?}")) && l.contains(what))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("nothing names {pk} with {what:?}:\n{text}"))
    };
    let one = line_of(&pk1, &format!("attribute {text_column:?} was"));
    assert!(
        one.contains("is {\"S\":\"tampered\"}") && one.contains("line "),
        "{one}"
    );
    let two = line_of(&pk2, "written again outside Ferry");
    assert!(two.contains("is {\"S\":\"re-inserted\"}"), "{two}");
    let three = line_of(&pk3, &format!("attribute {number_column:?} was"));
    assert!(
        three.contains(&format!("is {{\"N\":\"{}\"", rounded.trim_end_matches('0'))),
        "{three}"
    );
    let four = line_of(&pk4, &format!("attribute {set_column:?} was"));
    assert!(four.contains("is {\""), "{four}");
    assert!(
        text.contains("rows without provenance (written outside Ferry): 1"),
        "{text}"
    );
    let state = query_text(
        &url,
        &format!(
            "SELECT state || ' ' || chunks_differing::text FROM ferry.verifications WHERE run_id = '{run}' AND table_name = '{TABLE}'"
        ),
    )
    .await
    .unwrap();
    let state = state.unwrap();
    assert!(state.starts_with("differs "), "{state}");
    let differing: u64 = state["differs ".len()..].parse().unwrap();
    assert!((2..=4).contains(&differing), "{state}");

    // Values withheld: the rows are still found, their keys and values not shown.
    let (code, text) = verify_deep(&url, &run, &[], &[("FERRY_LOAD__REJECT_LINES", "omitted")]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "attribute {text_column:?} was <omitted>, is <omitted>"
        )),
        "{text}"
    );
    for secret in [&pk1, &pk2, &pk3, &pk4] {
        assert!(
            !text.contains(&format!("{secret:?}")),
            "{secret} shown:\n{text}"
        );
    }
    assert!(!text.contains("tampered"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_is_found_and_named_on_postgres() {
    tampering_is_found(TestTarget::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_is_found_and_named_on_heliosdb() {
    tampering_is_found(TestTarget::HeliosDb).await;
}

/// Load (killed once after a chunk's COPY, then resumed), `reset` of a shard and its reload, then
/// a second export appended: each run verifies on its own.
async fn sequence_verifies(target: TestTarget) {
    let (url, _server) = empty_target(target, "deep_sequence").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = generate_export(&dir.path().join("a"), &gen_options(91, 3_000, 3)).unwrap();
    let b = generate_export(
        &dir.path().join("b"),
        &GenOptions {
            export_id: "01700000000001-0b0b0b0b".into(),
            ..gen_options(91, 1_500, 2)
        },
    )
    .unwrap();
    rewrite_lines(&b, |line| {
        line.replacen(r#""PK":{"S":""#, r#""PK":{"S":"B-"#, 1)
    })
    .unwrap();
    let migrate = |root: &std::path::Path, extra: &[&str], env: &[(&str, &str)]| {
        let root = root.display().to_string();
        let mut args = vec![
            "migrate", "--export", &root, "--target", &url, "--key", "PK,SK", "--table", "seq",
        ];
        args.extend_from_slice(extra);
        let mut all_env = vec![("FERRY_LOAD__CHUNK_LINES", "400")];
        all_env.extend_from_slice(env);
        run_coordinator(&args, &all_env).unwrap()
    };
    // Killed after the COPY of a chunk (before its checkpoint), then resumed.
    let crashed = migrate(&a.root, &[], &[("FERRY_FAILPOINTS", "after_copy=exit@4")]);
    assert_ne!(
        crashed.status.code(),
        Some(0),
        "the failpoint stops the load"
    );
    assert_exit(&migrate(&a.root, &[], &[]), 0);
    let run_a = query_text(
        &url,
        "SELECT run_id FROM ferry.runs ORDER BY created_at LIMIT 1",
    )
    .await
    .unwrap()
    .unwrap();
    // A shard started over and loaded again: its ended load's digests no longer count.
    let shard = query_text(
        &url,
        &format!(
            "SELECT shard_id FROM ferry.shards WHERE run_id = '{run_a}' AND loaded_rows > 0 ORDER BY shard_id LIMIT 1"
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_exit(
        &run_coordinator(
            &[
                "reset", "--target", &url, "--run-id", &run_a, "--shard", &shard,
            ],
            &[],
        )
        .unwrap(),
        0,
    );
    assert_exit(&migrate(&a.root, &[], &[]), 0);
    // The ended load's digests are still recorded (and must not count).
    let loads_with_digests = query_text(
        &url,
        &format!("SELECT count(DISTINCT load_id)::text FROM ferry.chunk_digests WHERE run_id = '{run_a}'"),
    )
    .await
    .unwrap()
    .unwrap();
    let loaded_shards = query_text(
        &url,
        &format!(
            "SELECT count(*)::text FROM ferry.shards WHERE run_id = '{run_a}' AND loaded_rows > 0"
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        loads_with_digests.parse::<u64>().unwrap() > loaded_shards.parse::<u64>().unwrap(),
        "{target:?}: {loads_with_digests} loads with digests, {loaded_shards} shards"
    );
    // Another export appended into the same table.
    assert_exit(&migrate(&b.root, &["--append"], &[]), 0);
    let run_b = query_text(
        &url,
        "SELECT run_id FROM ferry.runs ORDER BY created_at DESC LIMIT 1",
    )
    .await
    .unwrap()
    .unwrap();
    let (code, text) = verify_deep(&url, &run_a, &[], &[]);
    assert_eq!(code, 0, "{target:?}: {text}");
    assert!(
        text.contains("seq: verified — 4500 rows read")
            && text.contains("1500 rows of other runs (--append) are not this run's to verify"),
        "{target:?}: {text}"
    );
    // `finalize --deep` (run again on a complete run: only the verification) says the same.
    let finalized = run_coordinator(
        &["finalize", "--deep", "--target", &url, "--run-id", &run_b],
        &[],
    )
    .unwrap();
    let text = String::from_utf8_lossy(&finalized.stdout).to_string();
    assert_exit(&finalized, 0);
    assert!(
        text.contains("every value matches what was loaded")
            && text.contains("3000 rows of other runs (--append)"),
        "{target:?}: {text}"
    );
    let recorded = query_text(
        &url,
        &format!("SELECT state FROM ferry.verifications WHERE run_id = '{run_b}'"),
    )
    .await
    .unwrap();
    assert_eq!(recorded.as_deref(), Some("verified"), "{target:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_verify_after_a_crash_a_reset_and_an_append_on_postgres() {
    sequence_verifies(TestTarget::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_verify_after_a_crash_a_reset_and_an_append_on_heliosdb() {
    sequence_verifies(TestTarget::HeliosDb).await;
}

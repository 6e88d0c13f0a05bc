//! The rollback: export → Ferry load → `export-back` → the items equal the original export's, on
//! PostgreSQL and HeliosDB. A plain run with `nested_json = "dynamodb"` comes back exactly; with
//! the default plain JSON, exactly but for the class the command declares (sets and binary inside
//! nested values and the overflow column). The migration guide's routed run comes back equal up
//! to what its config declares (email transform, GSI1PK dropped, expired sessions filtered, the
//! rejected lines), each class listed in the summary; anything else is a failure. Rows changed
//! after the migration come back as they are now; moto's `ImportTable` accepts the layout.
//!
//! Attempts (issue 24, reproduction 2): a rerun into an output that holds another attempt's
//! parts (complete or interrupted) is refused (exit 2, naming `--replace`), and with `--replace`
//! the output holds exactly the table's rows as they are now; on PostgreSQL every table of a
//! routed run is read in one exported snapshot (rows deleted while the command is held after
//! taking it are still exported), on HeliosDB the summary says they were not.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_shared::schema::NestedJson;
use ferry_tests::compare::{differences, plain, read_source_items, SourceItems};
use ferry_tests::harness::{
    assert_exit, binary, connect, fixture_on, gen_options, migrate_in_process, run_coordinator,
    stderr_of, Fixture, TestTarget,
};
use ferry_tests::helios::HeliosServer;
use ferry_tests::pg::{shared_cluster, spawn_dying_with_parent};
use ferry_tests::shop::{generate_shop, write_shop_export, EXPORT_TIME};
use serde_json::{Map, Value};

const GUIDE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/examples/migration-guide.toml"
);

/// A plain JSON value back in DynamoDB's types, as the rollback reads it: what `nested_json =
/// "plain"` declares (sets become lists, binary a string).
fn from_plain(value: &Value) -> Value {
    match value {
        Value::Null => serde_json::json!({"NULL": true}),
        Value::Bool(b) => serde_json::json!({ "BOOL": b }),
        Value::Number(n) => serde_json::json!({"N": n.to_string()}),
        Value::String(s) => serde_json::json!({ "S": s }),
        Value::Array(items) => {
            serde_json::json!({"L": items.iter().map(from_plain).collect::<Vec<_>>()})
        }
        Value::Object(map) => {
            serde_json::json!({"M": map.iter().map(|(k, v)| (k.clone(), from_plain(v))).collect::<Map<_, _>>()})
        }
    }
}

/// `export-back` arguments (300 items a part, JSON summary) and `extra` ones.
fn export_back_args(url: &str, run_id: &str, output: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "export-back",
        "--target",
        url,
        "--run-id",
        run_id,
        "--output",
        &output.display().to_string(),
        "--part-items",
        "300",
        "--json",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Runs `export-back` with `extra` arguments; returns how it ended.
fn try_export_back(
    url: &str,
    run_id: &str,
    output: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let args = export_back_args(url, run_id, output, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_coordinator(&args, env).unwrap()
}

fn export_back(url: &str, run_id: &str, output: &Path, env: &[(&str, &str)]) -> Value {
    export_back_with(url, run_id, output, &[], env)
}

fn export_back_with(
    url: &str,
    run_id: &str,
    output: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let out = try_export_back(url, run_id, output, extra, env);
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts that `export-back` refused the output `output` (exit 2) with a message naming it and
/// `--replace`; returns the message.
fn assert_refused(out: &Output, output: &Path) -> String {
    assert_exit(out, 2);
    let message = stderr_of(out);
    assert!(
        message.contains("--replace") && message.contains(&output.display().to_string()),
        "{message}"
    );
    message
}

/// The output's attempt marker.
fn marker(output: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(output.join("_ferry_export_back.json")).unwrap()).unwrap()
}

async fn run_id_of(url: &str, table: &str) -> String {
    let client = connect(url).await.unwrap();
    for message in client
        .simple_query("SELECT run_id, target_table FROM ferry.runs")
        .await
        .unwrap()
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            if row.get(1) == Some(table) {
                return row.get(0).unwrap().to_string();
            }
        }
    }
    panic!("no run loads {table}")
}

fn classes(summary: &Value) -> BTreeSet<String> {
    summary["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d["class"].as_str().unwrap(),
                d["column"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn plain_run_round_trips(target: TestTarget, name: &str) {
    let fixture: Fixture = fixture_on(target, name, &gen_options(21, 1200, 3))
        .await
        .unwrap();
    let source = read_source_items(&fixture.export.export_dir, &["PK", "SK"]).unwrap();
    // Exactly: nested values typed (nested_json = "dynamodb").
    let mut settings = ferry_tests::harness::small_chunks(400);
    settings.mapping.nested_json = NestedJson::Dynamodb;
    settings.mapping.table = Some("exact".into());
    settings.mapping.min_presence = 0.05;
    let report = migrate_in_process(&fixture, settings, false).await.unwrap();
    assert!(report.verified(), "{}", report.reason());
    let run = run_id_of(&fixture.url, "exact").await;
    let out = fixture.dir.path().join("rollback-exact");
    let summary = export_back(&fixture.url, &run, &out, &[]);
    let exported = read_source_items(&out.join("data"), &["PK", "SK"]).unwrap();
    let diffs = differences(&source, &exported);
    assert!(
        diffs.is_empty(),
        "{} differences: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    assert_eq!(summary["items"], 1200);
    assert!(summary["parts"].as_u64().unwrap() >= 4, "{summary:#}");
    assert_eq!(
        classes(&summary),
        BTreeSet::from(["provenance:_ferry_chunk".to_string()])
    );

    // Changed after the migration: an update, a new row, a deletion come back as they are now.
    let client = connect(&fixture.url).await.unwrap();
    let edge = "EDGE#4";
    client
        .batch_execute(&format!(
            "UPDATE exact SET \"attrs\" = '{{\"note\":{{\"S\":\"changed\"}}}}' WHERE \"PK\" = '{edge}'"
        ))
        .await
        .unwrap();
    let mut now = source.clone();
    let key = now.keys().find(|k| k.contains(edge)).unwrap().clone();
    now.get_mut(&key)
        .unwrap()
        .insert("note".into(), serde_json::json!({"S": "changed"}));
    let again = fixture.dir.path().join("rollback-now");
    export_back(&fixture.url, &run, &again, &[]);
    let exported = read_source_items(&again.join("data"), &["PK", "SK"]).unwrap();
    let diffs = differences(&now, &exported);
    assert!(diffs.is_empty(), "{diffs:#?}");
    // A rerun into the same folder is refused (its parts were read from another table state and
    // are never reused); with --replace every part is written again, none kept.
    let first = marker(&again);
    assert_eq!(first["state"], "complete", "{first:#}");
    let refused = try_export_back(&fixture.url, &run, &again, &[], &[]);
    let message = assert_refused(&refused, &again);
    assert!(
        message.contains(first["attempt_id"].as_str().unwrap()),
        "{message}"
    );
    let rerun = export_back_with(&fixture.url, &run, &again, &["--replace"], &[]);
    assert_eq!(rerun["items"], 1200);
    assert!(rerun["replaced_files"].as_u64().unwrap() >= 3, "{rerun:#}");
    assert_ne!(rerun["attempt_id"], first["attempt_id"]);
    assert_eq!(marker(&again)["attempt_id"], rerun["attempt_id"]);
    let exported = read_source_items(&again.join("data"), &["PK", "SK"]).unwrap();
    assert!(differences(&now, &exported).is_empty());

    // The default plain JSON: equal but for the declared class (nested sets and binary).
    let mut settings = ferry_tests::harness::small_chunks(400);
    settings.mapping.table = Some("plain".into());
    settings.mapping.min_presence = 0.05;
    let report = migrate_in_process(&fixture, settings, false).await.unwrap();
    assert!(report.verified(), "{}", report.reason());
    let run = run_id_of(&fixture.url, "plain").await;
    let out = fixture.dir.path().join("rollback-plain");
    let summary = export_back(&fixture.url, &run, &out, &[]);
    assert!(
        classes(&summary).contains("plain_json:attrs"),
        "{summary:#}"
    );
    let schema = ferry_tests::harness::query_text(
        &fixture.url,
        &format!("SELECT schema_json FROM ferry.runs WHERE run_id = '{run}'"),
    )
    .await
    .unwrap()
    .unwrap();
    let schema: ferry_shared::schema::TableSchema = serde_json::from_str(&schema).unwrap();
    let expected: SourceItems = source
        .iter()
        .map(|(key, item)| {
            let item = item
                .iter()
                .map(|(name, typed)| {
                    let descriptor = typed.as_object().unwrap().keys().next().unwrap().clone();
                    let column = schema.columns.iter().find(|c| &c.name == name);
                    let typed_column = column.is_some_and(|c| {
                        c.ddb_type.descriptor() == descriptor
                            && !matches!(descriptor.as_str(), "M" | "L")
                            && (target == TestTarget::Postgres
                                || descriptor != "N"
                                || ferry_tests::compare::fits_decimal96(
                                    typed["N"].as_str().unwrap(),
                                ))
                            && (target == TestTarget::Postgres
                                || descriptor != "NS"
                                || typed["NS"].as_array().unwrap().iter().all(|n| {
                                    ferry_tests::compare::fits_decimal96(n.as_str().unwrap())
                                }))
                    });
                    let value = if typed_column || descriptor == "NULL" {
                        typed.clone()
                    } else {
                        from_plain(&plain(typed).unwrap())
                    };
                    (name.clone(), value)
                })
                .collect();
            (key.clone(), item)
        })
        .collect();
    let exported = read_source_items(&out.join("data"), &["PK", "SK"]).unwrap();
    let diffs = differences(&expected, &exported);
    assert!(
        diffs.is_empty(),
        "{} differences: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_run_round_trips_on_postgres() {
    plain_run_round_trips(TestTarget::Postgres, "rollback_plain").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_run_round_trips_on_heliosdb() {
    plain_run_round_trips(TestTarget::HeliosDb, "rollback_plain").await;
}

/// The guide's routed run, loaded and exported back; returns the summary.
async fn guide_round_trips(url: &str, seed: u64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let shop = generate_shop(seed, 60, 15);
    let export = write_shop_export(dir.path(), &shop, seed, 3).unwrap();
    let loaded = run_coordinator(
        &[
            "migrate",
            "--export",
            &export.root.display().to_string(),
            "--target",
            url,
            "--config",
            GUIDE,
        ],
        &[("FERRY_LOAD__CHUNK_LINES", "97")],
    )
    .unwrap();
    assert_exit(&loaded, 0);
    let run = run_id_of(url, "ShopTable").await;
    let out = dir.path().join("rollback");
    let summary = export_back(url, &run, &out, &[]);
    // What the config declares, each listed by the command.
    let listed = classes(&summary);
    for class in [
        "transform:email",
        "dropped_attribute:GSI1PK",
        "filtered:",
        "rejected_at_load:",
        "derived_column:id",
        "derived_column:ship_city",
        "time:created_at",
        "time:expires_at",
        "provenance:_ferry_chunk",
    ] {
        assert!(listed.contains(class), "{class} not listed: {listed:#?}");
    }
    let expired = shop.sessions.len() - shop.live_sessions().len();
    let filtered = summary["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["class"] == "filtered")
        .unwrap();
    assert_eq!(filtered["items"], expired as u64);
    // The original items with exactly those differences applied.
    let source = read_source_items(&export.export_dir, &["PK", "SK"]).unwrap();
    let rejected: BTreeSet<String> = shop
        .bad_lines
        .iter()
        .filter_map(|(line, _)| {
            let v: Value = serde_json::from_str(line).ok()?;
            Some(
                serde_json::to_string(&[
                    v["Item"]["PK"]["S"].as_str()?,
                    v["Item"]["SK"]["S"].as_str()?,
                ])
                .unwrap(),
            )
        })
        .collect();
    let expected: SourceItems = source
        .into_iter()
        .filter(|(key, _)| !rejected.contains(key))
        .filter(|(_, item)| {
            let sk = item["SK"]["S"].as_str().unwrap();
            !(sk.starts_with("SESSION#")
                && item["ttl"]["N"].as_str().unwrap().parse::<i64>().unwrap() < EXPORT_TIME)
        })
        .map(|(key, mut item)| {
            if item["SK"]["S"] == "PROFILE" {
                item.remove("GSI1PK");
                let email = item["email"]["S"].as_str().unwrap().trim().to_lowercase();
                item.insert("email".into(), serde_json::json!({ "S": email }));
            }
            (key, item)
        })
        .collect();
    let exported = read_source_items(&out.join("data"), &["PK", "SK"]).unwrap();
    let diffs = differences(&expected, &exported);
    assert!(
        diffs.is_empty(),
        "{} differences: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    assert_eq!(summary["items"].as_u64().unwrap(), expected.len() as u64);
    summary
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guide_routed_run_round_trips_on_postgres() {
    let url = shared_cluster()
        .create_database("rollback_guide")
        .await
        .unwrap();
    let summary = guide_round_trips(&url, 31).await;
    let listed = classes(&summary);
    assert!(listed.contains("unmapped_column:updated_at"), "{listed:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guide_routed_run_round_trips_on_heliosdb() {
    let server = HeliosServer::start().unwrap();
    let summary = guide_round_trips(&server.url(), 32).await;
    let listed = classes(&summary);
    assert!(listed.contains("unmapped_column:embedding"), "{listed:#?}");
}

const IMPORT_TABLE: &str = r#"
import base64, json, sys, time, boto3
endpoint, bucket, prefix, table = sys.argv[1:5]
ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
arn = ddb.import_table(
    S3BucketSource={"S3Bucket": bucket, "S3KeyPrefix": prefix},
    InputFormat="DYNAMODB_JSON", InputCompressionType="GZIP",
    TableCreationParameters={"TableName": table,
        "AttributeDefinitions": [{"AttributeName": "PK", "AttributeType": "S"},
                                 {"AttributeName": "SK", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "PK", "KeyType": "HASH"},
                      {"AttributeName": "SK", "KeyType": "RANGE"}],
        "BillingMode": "PAY_PER_REQUEST"})["ImportTableDescription"]["ImportArn"]
for _ in range(600):
    d = ddb.describe_import(ImportArn=arn)["ImportTableDescription"]
    if d["ImportStatus"] != "IN_PROGRESS":
        break
    time.sleep(0.1)
if d["ImportStatus"] != "COMPLETED":
    sys.exit(f"import ended {d['ImportStatus']}: {d.get('FailureMessage')}")

def enc(v):
    (t, x), = v.items()
    if t == "B": return {"B": base64.b64encode(x).decode()}
    if t == "BS": return {"BS": [base64.b64encode(b).decode() for b in x]}
    if t == "M": return {"M": {k: enc(w) for k, w in x.items()}}
    if t == "L": return {"L": [enc(w) for w in x]}
    return {t: x}

pages = ddb.get_paginator("scan").paginate(TableName=table)
for page in pages:
    for item in page["Items"]:
        print(json.dumps({"Item": {k: enc(v) for k, v in item.items()}}))
"#;

/// Items typed by boto3's TypeSerializer (odd names, sets, deep maps, 38-digit numbers, a 350 KB
/// string), not by Ferry's generator: through Parquet (read by pyarrow) and through a PostgreSQL
/// load and `export-back`, whose output moto's `ImportTable` takes.
#[tokio::test(flavor = "multi_thread")]
async fn boto3_typed_items_round_trip_through_parquet_and_export_back() {
    let dir = tempfile::tempdir().unwrap();
    let history = ferry_tests::history::History::generate(&dir.path().join("h"), 25, 5).unwrap();
    let export = history.final_state();
    let source = read_source_items(&history.final_export_dir(), &["PK", "SK"]).unwrap();
    assert!(source.len() > 25, "{}", source.len());
    // Parquet, read back by pyarrow.
    let ledger = shared_cluster()
        .create_database("boto3_parquet")
        .await
        .unwrap();
    let lake = dir.path().join("lake");
    let out = run_coordinator(
        &[
            "migrate",
            "--export",
            &export.display().to_string(),
            "--parquet",
            &lake.display().to_string(),
            "--ledger",
            &ledger,
            "--key",
            "PK,SK",
        ],
        &[
            ("FERRY_LOAD__CHUNK_LINES", "40"),
            ("FERRY_MAPPING__MIN_PRESENCE", "0.01"),
        ],
    )
    .unwrap();
    assert_exit(&out, 0);
    let read = ferry_tests::parquet::read_dataset(&lake.join("ShopTable")).unwrap();
    let diffs =
        ferry_tests::compare::compare(&source, &["PK", "SK"], &read.columns, "attrs", &read.rows);
    assert!(diffs.is_empty(), "{diffs:#?}");

    // A database load, exported back exactly, imported by moto's ImportTable.
    let url = shared_cluster()
        .create_database("boto3_rollback")
        .await
        .unwrap();
    let out = run_coordinator(
        &[
            "migrate",
            "--export",
            &export.display().to_string(),
            "--target",
            &url,
            "--key",
            "PK,SK",
        ],
        &[
            ("FERRY_MAPPING__NESTED_JSON", "dynamodb"),
            ("FERRY_MAPPING__MIN_PRESENCE", "0.01"),
        ],
    )
    .unwrap();
    assert_exit(&out, 0);
    let run = run_id_of(&url, "ShopTable").await;
    let moto = ferry_tests::moto::shared_moto();
    moto.s3()
        .create_bucket()
        .bucket("rollback")
        .send()
        .await
        .unwrap();
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_coordinator(
        &[
            "export-back",
            "--target",
            &url,
            "--run-id",
            &run,
            "--output",
            "s3://rollback/shop/",
            "--part-items",
            "20",
            "--json",
        ],
        &env,
    )
    .unwrap();
    assert_exit(&out, 0);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["import_prefix"], "s3://rollback/shop/data/");
    let script = dir.path().join("import.py");
    std::fs::write(&script, IMPORT_TABLE).unwrap();
    let scanned = std::process::Command::new(ferry_tests::history::python().unwrap())
        .arg(&script)
        .args([&moto.endpoint(), "rollback", "shop/data/", "ShopRollback"])
        .output()
        .unwrap();
    assert!(
        scanned.status.success(),
        "{}",
        String::from_utf8_lossy(&scanned.stderr)
    );
    let imported_dir = dir.path().join("imported");
    std::fs::create_dir_all(&imported_dir).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &scanned.stdout).unwrap();
    std::fs::write(imported_dir.join("scan.json.gz"), gz.finish().unwrap()).unwrap();
    let imported = read_source_items(&imported_dir, &["PK", "SK"]).unwrap();
    // Every item was imported. moto's ImportTable parses the lines with its own JSON parser
    // (py_partiql_parser), which keeps escapes (`\t`, `\"`) as written: items holding a string
    // that needs one are compared by key only; every other item must be equal.
    assert_eq!(
        imported.keys().collect::<Vec<_>>(),
        source.keys().collect::<Vec<_>>()
    );
    let plain_text =
        |item: &Map<String, Value>| !Value::Object(item.clone()).to_string().contains('\\');
    let comparable: SourceItems = source
        .iter()
        .filter(|(_, item)| plain_text(item))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        comparable.len() * 2 > source.len(),
        "{} of {}",
        comparable.len(),
        source.len()
    );
    let imported: SourceItems = imported
        .into_iter()
        .filter(|(k, _)| comparable.contains_key(k))
        .collect();
    let diffs = differences(&comparable, &imported);
    assert!(
        diffs.is_empty(),
        "{} differences: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(3)]
    );
    // The same export, to a folder: every item exactly.
    let local = dir.path().join("rollback");
    export_back(&url, &run, &local, &[]);
    let exported = read_source_items(&local.join("data"), &["PK", "SK"]).unwrap();
    let diffs = differences(&source, &exported);
    assert!(
        diffs.is_empty(),
        "{} differences: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(3)]
    );
}

/// The table's keys as the exported items' keys (`["PK","SK"]` JSON).
async fn table_keys(url: &str, table: &str) -> BTreeSet<String> {
    let client = connect(url).await.unwrap();
    let mut keys = BTreeSet::new();
    for message in client
        .simple_query(&format!("SELECT \"PK\", \"SK\" FROM \"{table}\""))
        .await
        .unwrap()
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            keys.insert(
                serde_json::to_string(&[row.get(0).unwrap(), row.get(1).unwrap()]).unwrap(),
            );
        }
    }
    keys
}

/// Issue 24, reproduction 2: `export-back`, then the application deletes 200 rows, then
/// `export-back` to the same output. Refused (exit 2, naming --replace) and the output left as
/// it was; with --replace the output holds exactly the table's rows now. An interrupted attempt's
/// output is refused the same way (its parts cannot be finished from another table state).
async fn a_rerun_after_deletes_is_refused_then_replaced(target: TestTarget) {
    let fixture: Fixture = fixture_on(target, "rollback_stale", &gen_options(24, 1200, 3))
        .await
        .unwrap();
    let mut settings = ferry_tests::harness::small_chunks(400);
    settings.mapping.table = Some("stale".into());
    settings.mapping.min_presence = 0.05;
    let report = migrate_in_process(&fixture, settings, false).await.unwrap();
    assert!(report.verified(), "{}", report.reason());
    let run = run_id_of(&fixture.url, "stale").await;
    let out = fixture.dir.path().join("rollback");
    let first = export_back(&fixture.url, &run, &out, &[]);
    let loaded = table_keys(&fixture.url, "stale").await;
    assert_eq!(first["items"].as_u64().unwrap(), loaded.len() as u64);
    assert_eq!(
        first["consistency"]["one_snapshot"],
        target == TestTarget::Postgres,
        "{first:#}"
    );
    if target == TestTarget::HeliosDb {
        let detail = first["consistency"]["detail"].as_str().unwrap();
        assert!(detail.contains("no exported snapshot"), "{detail}");
        assert_eq!(first["consistency"]["snapshot_id"], Value::Null);
    }

    // The application deletes 200 rows behind Ferry's back (keys of plain characters, so the
    // test's literals need no escaping on either server).
    let deleted: Vec<(String, String)> = loaded
        .iter()
        .map(|k| serde_json::from_str::<(String, String)>(k).unwrap())
        .filter(|(pk, sk)| {
            format!("{pk}{sk}")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "#-_:.".contains(c))
        })
        .step_by(2)
        .take(200)
        .collect();
    assert_eq!(deleted.len(), 200);
    let client = connect(&fixture.url).await.unwrap();
    let statements: String = deleted
        .iter()
        .map(|(pk, sk)| format!("DELETE FROM \"stale\" WHERE \"PK\" = '{pk}' AND \"SK\" = '{sk}';"))
        .collect();
    client.batch_execute(&statements).await.unwrap();
    let now = table_keys(&fixture.url, "stale").await;
    assert_eq!(now.len(), loaded.len() - 200);

    // The rerun is refused, and the output is untouched: still the first attempt's items.
    let refused = try_export_back(&fixture.url, &run, &out, &[], &[]);
    let message = assert_refused(&refused, &out);
    assert!(message.contains("complete attempt"), "{message}");
    let kept = read_source_items(&out.join("data"), &["PK", "SK"]).unwrap();
    assert_eq!(kept.len(), loaded.len());
    assert_eq!(marker(&out)["attempt_id"], first["attempt_id"]);

    // With --replace: exactly the table's rows now, every key once.
    let replaced = export_back_with(&fixture.url, &run, &out, &["--replace"], &[]);
    let exported = read_source_items(&out.join("data"), &["PK", "SK"]).unwrap();
    assert_eq!(exported.len(), now.len());
    assert_eq!(exported.keys().cloned().collect::<BTreeSet<_>>(), now);
    assert_eq!(replaced["items"].as_u64().unwrap(), now.len() as u64);
    assert_eq!(
        replaced["tables"][0]["rows"].as_u64().unwrap(),
        now.len() as u64
    );
    let written = marker(&out);
    assert_eq!(written["state"], "complete");
    assert_eq!(written["attempt_id"], replaced["attempt_id"]);
    assert_eq!(written["run_id"], run.as_str());
    assert_eq!(written["items"], replaced["items"]);
    assert_ne!(replaced["attempt_id"], first["attempt_id"]);

    // An attempt that dies after its marker (a crash between snapshot and parts): the marker
    // stays `running`, the rerun is refused as unfinished, --replace exports afresh.
    let crashed = fixture.dir.path().join("crashed");
    let died = try_export_back(
        &fixture.url,
        &run,
        &crashed,
        &[],
        &[("FERRY_FAILPOINTS", "export_back_after_snapshot=error")],
    );
    assert_exit(&died, 2);
    assert_eq!(marker(&crashed)["state"], "running");
    let refused = try_export_back(&fixture.url, &run, &crashed, &[], &[]);
    let message = assert_refused(&refused, &crashed);
    assert!(message.contains("unfinished attempt"), "{message}");
    let again = export_back_with(&fixture.url, &run, &crashed, &["--replace"], &[]);
    assert_eq!(again["items"].as_u64().unwrap(), now.len() as u64);
    let exported = read_source_items(&crashed.join("data"), &["PK", "SK"]).unwrap();
    assert_eq!(exported.keys().cloned().collect::<BTreeSet<_>>(), now);

    // A file export-back did not write, in data/: refused even with --replace, and kept.
    let foreign = out.join("data").join("notes.json.gz");
    std::fs::write(&foreign, b"").unwrap();
    let refused = try_export_back(&fixture.url, &run, &out, &["--replace"], &[]);
    assert_exit(&refused, 2);
    assert!(
        stderr_of(&refused).contains("notes.json.gz"),
        "{}",
        stderr_of(&refused)
    );
    assert!(foreign.exists());
    assert_eq!(marker(&out)["attempt_id"], replaced["attempt_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_after_deletes_is_refused_then_replaced_on_postgres() {
    a_rerun_after_deletes_is_refused_then_replaced(TestTarget::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_after_deletes_is_refused_then_replaced_on_heliosdb() {
    a_rerun_after_deletes_is_refused_then_replaced(TestTarget::HeliosDb).await;
}

/// PostgreSQL: every table of a routed run is read in the one snapshot the command exports. The
/// command is held (a sleep failpoint) after it took the snapshot and wrote its marker, before it
/// reads any table; meanwhile rows are deleted from three routed tables. With one worker the
/// tables are read one after another, all after the deletes: the export still equals one taken
/// before them, while a fresh export-back afterwards lacks the deleted rows.
#[tokio::test(flavor = "multi_thread")]
async fn routed_tables_are_read_in_one_snapshot_on_postgres() {
    let url = shared_cluster()
        .create_database("rollback_snapshot")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shop = generate_shop(33, 60, 15);
    let export = write_shop_export(dir.path(), &shop, 33, 3).unwrap();
    let loaded = run_coordinator(
        &[
            "migrate",
            "--export",
            &export.root.display().to_string(),
            "--target",
            &url,
            "--config",
            GUIDE,
        ],
        &[],
    )
    .unwrap();
    assert_exit(&loaded, 0);
    let run = run_id_of(&url, "ShopTable").await;
    let before_dir = dir.path().join("before");
    let before = export_back(&url, &run, &before_dir, &[]);
    let tables: Vec<String> = before["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["rows"].as_u64().unwrap() >= 3)
        .map(|t| t["table"].as_str().unwrap().to_string())
        // The tables no foreign key references (the guide's post-load steps add some).
        .filter(|t| ["orders", "sessions", "reviews"].contains(&t.as_str()))
        .collect();
    assert_eq!(tables.len(), 3, "{before:#}");

    let held_dir = dir.path().join("held");
    let mut command = Command::new(binary("ferry-coordinator"));
    command
        .args(export_back_args(&url, &run, &held_dir, &["--workers", "1"]))
        .env("FERRY_FAILPOINTS", "export_back_after_snapshot=sleep6000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_dying_with_parent(command).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !held_dir.join("_ferry_export_back.json").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "export-back ended before writing its marker"
        );
        assert!(Instant::now() < deadline, "no attempt marker after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held_marker = marker(&held_dir);
    // The snapshot exists now: delete 3 rows of each of three routed tables.
    let client = connect(&url).await.unwrap();
    let mut deleted = 0u64;
    for table in &tables {
        deleted += client
            .execute(
                &format!(
                    "DELETE FROM \"{table}\" WHERE ctid IN (SELECT ctid FROM \"{table}\" LIMIT 3)"
                ),
                &[],
            )
            .await
            .unwrap();
    }
    assert_eq!(deleted, 3 * tables.len() as u64);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the held export-back went on before the rows were deleted: the test proves nothing"
    );
    let held_out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_exit(&held_out, 0);
    let held: Value = serde_json::from_slice(&held_out.stdout).unwrap();
    // Read in one snapshot, the one its marker recorded before the deletes.
    assert_eq!(held["consistency"]["one_snapshot"], true, "{held:#}");
    let id = held["consistency"]["snapshot_id"].as_str().unwrap();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
        "{id}"
    );
    assert_eq!(held_marker["consistency"]["snapshot_id"], id);
    assert_eq!(held_marker["state"], "running");
    assert_eq!(marker(&held_dir)["state"], "complete");
    // Every table as before the deletes, row for row and item for item.
    assert_eq!(held["items"], before["items"]);
    for (a, b) in held["tables"]
        .as_array()
        .unwrap()
        .iter()
        .zip(before["tables"].as_array().unwrap())
    {
        assert_eq!((&a["table"], &a["rows"]), (&b["table"], &b["rows"]));
    }
    let before_items = read_source_items(&before_dir.join("data"), &["PK", "SK"]).unwrap();
    let held_items = read_source_items(&held_dir.join("data"), &["PK", "SK"]).unwrap();
    let diffs = differences(&before_items, &held_items);
    assert!(diffs.is_empty(), "{diffs:#?}");
    // Outside that snapshot the deletes are visible: without it the test would fail.
    let after = export_back(&url, &run, &dir.path().join("after"), &[]);
    assert_eq!(
        after["items"].as_u64().unwrap(),
        before["items"].as_u64().unwrap() - deleted
    );
    assert_ne!(
        after["consistency"]["snapshot_id"],
        held["consistency"]["snapshot_id"]
    );
}

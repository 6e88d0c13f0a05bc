//! The rollback: export → Ferry load → `export-back` → the items equal the original export's, on
//! PostgreSQL and HeliosDB. A plain run with `nested_json = "dynamodb"` comes back exactly; with
//! the default plain JSON, exactly but for the class the command declares (sets and binary inside
//! nested values and the overflow column). The migration guide's routed run comes back equal up
//! to what its config declares (email transform, GSI1PK dropped, expired sessions filtered, the
//! rejected lines), each class listed in the summary; anything else is a failure. Rows changed
//! after the migration come back as they are now; a rerun keeps the published parts; moto's
//! `ImportTable` accepts the layout.

use std::collections::BTreeSet;
use std::path::Path;

use ferry_shared::schema::NestedJson;
use ferry_tests::compare::{norm_number, plain, read_source_items, SourceItems};
use ferry_tests::harness::{
    assert_exit, connect, fixture_on, gen_options, migrate_in_process, run_coordinator, Fixture,
    TestTarget,
};
use ferry_tests::helios::HeliosServer;
use ferry_tests::pg::shared_cluster;
use ferry_tests::shop::{generate_shop, write_shop_export, EXPORT_TIME};
use serde_json::{Map, Value};

const GUIDE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/examples/migration-guide.toml"
);

/// Typed DynamoDB values equal: numbers by exact value, sets as sets.
fn typed_eq(a: &Value, b: &Value) -> bool {
    let (Some((da, va)), Some((db, vb))) = (
        a.as_object().and_then(|m| m.iter().next()),
        b.as_object().and_then(|m| m.iter().next()),
    ) else {
        return false;
    };
    if da != db {
        return false;
    }
    let set = |v: &Value, number: bool| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .map(|s| {
                if number {
                    norm_number(s).unwrap_or_default()
                } else {
                    s.to_string()
                }
            })
            .collect()
    };
    match da.as_str() {
        "N" => norm_number(va.as_str().unwrap_or("x")) == norm_number(vb.as_str().unwrap_or("y")),
        "SS" | "BS" => set(va, false) == set(vb, false),
        "NS" => set(va, true) == set(vb, true),
        "M" => item_eq(va.as_object().unwrap(), vb.as_object().unwrap()),
        "L" => {
            let (x, y) = (va.as_array().unwrap(), vb.as_array().unwrap());
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| typed_eq(p, q))
        }
        _ => va == vb,
    }
}

fn item_eq(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| typed_eq(v, w)))
}

/// Every difference between the expected and the exported items.
fn differences(expected: &SourceItems, exported: &SourceItems) -> Vec<String> {
    let mut out = Vec::new();
    for (key, item) in expected {
        match exported.get(key) {
            None => out.push(format!("{key} is missing")),
            Some(got) if !item_eq(item, got) => out.push(format!(
                "{key}: expected {}\n  exported {}",
                Value::Object(item.clone()),
                Value::Object(got.clone())
            )),
            _ => {}
        }
    }
    for key in exported.keys().filter(|k| !expected.contains_key(*k)) {
        out.push(format!("{key} was not in the export"));
    }
    out
}

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

fn export_back(url: &str, run_id: &str, output: &Path, env: &[(&str, &str)]) -> Value {
    let out = run_coordinator(
        &[
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
        ],
        env,
    )
    .unwrap();
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
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
    // A rerun into the same folder keeps every part and writes none twice.
    let rerun = export_back(&fixture.url, &run, &again, &[]);
    assert_eq!(
        rerun["tables"][0]["parts_kept"],
        rerun["tables"][0]["parts"]
    );
    assert_eq!(rerun["items"], 1200);
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

//! The migration guide as an acceptance test: a generated single-table-design export (users,
//! orders, products, reviews and sessions under one table's key prefixes) migrated with the
//! repository's example config (`deploy/examples/migration-guide.toml`) by the real binary. Every
//! item must land in the right table with the right values, the foreign keys must resolve after
//! `finalize` adds them, and the guide's validation queries must give the numbers computed here
//! from the generator's entities. On both targets: a crash between any two load steps, kill -9
//! and racing workers leave every table exact; a crash after any post-load step resumes at that
//! step; orphans are reported, never dropped; and the whole scenario runs at 100k items.

use std::collections::{BTreeMap, BTreeSet};

use ferry_tests::harness::{assert_exit, binary, connect, query_text, run_coordinator, stderr_of};
use ferry_tests::helios::HeliosServer;
use ferry_tests::pg::shared_cluster;
use ferry_tests::shop::{generate_shop, write_shop_export, Shop};
use serde_json::{json, Value};

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/examples/migration-guide.toml"
);

struct Loaded {
    url: String,
    shop: Shop,
    export: ferry_tests::gen::GeneratedExport,
    _dir: tempfile::TempDir,
    export_root: String,
    _server: Option<HeliosServer>,
}

async fn prepared(name: &str, seed: u64) -> anyhow::Result<Loaded> {
    let url = shared_cluster().create_database(name).await?;
    prepared_at(url, seed, None)
}

fn prepared_at(url: String, seed: u64, server: Option<HeliosServer>) -> anyhow::Result<Loaded> {
    let dir = tempfile::tempdir()?;
    let shop = generate_shop(seed, 120, 30);
    let export = write_shop_export(dir.path(), &shop, seed, 4)?;
    Ok(Loaded {
        url,
        shop,
        export_root: export.root.display().to_string(),
        export,
        _dir: dir,
        _server: server,
    })
}

fn migrate(loaded: &Loaded, env: &[(&str, &str)]) -> anyhow::Result<std::process::Output> {
    let mut all = vec![
        ("FERRY_LOAD__CHUNK_LINES", "97"),
        ("FERRY_LOAD__BLOCK_LINES", "31"),
    ];
    all.extend_from_slice(env);
    run_coordinator(
        &[
            "migrate",
            "--export",
            &loaded.export_root,
            "--target",
            &loaded.url,
            "--config",
            CONFIG,
            "--json",
        ],
        &all,
    )
}

fn cents(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

fn json_opt(row: &tokio_postgres::Row, index: usize) -> Option<Value> {
    row.get::<_, Option<String>>(index)
        .map(|text| serde_json::from_str(&text).expect("the column holds JSON"))
}

fn json_at(row: &tokio_postgres::Row, index: usize) -> Value {
    json_opt(row, index).expect("not NULL")
}

/// Every table's rows equal the generator's entities, value by value.
async fn assert_tables_match(url: &str, shop: &Shop) -> anyhow::Result<()> {
    let client = connect(url).await?;
    // users
    let rows = client
        .query(
            "SELECT id, dynamo_pk, dynamo_sk, name, email, status, profile::text, \
             (extract(epoch FROM created_at))::int8 FROM users ORDER BY id",
            &[],
        )
        .await?;
    assert_eq!(rows.len(), shop.users.len());
    for (row, user) in rows.iter().zip(&shop.users) {
        assert_eq!(row.get::<_, i32>(0), user.id);
        assert_eq!(row.get::<_, String>(1), format!("USER#{}", user.id));
        assert_eq!(row.get::<_, String>(2), "PROFILE");
        assert_eq!(row.get::<_, String>(3), user.name);
        assert_eq!(
            row.get::<_, String>(4),
            user.raw_email.trim().to_lowercase()
        );
        assert_eq!(row.get::<_, String>(5), user.status);
        // The rest column: everything no column took, but GSI1PK (dropped by name).
        assert_eq!(
            json_at(row, 6),
            json!({"profile": {"address": {"city": user.city}, "tier": user.tier}})
        );
        assert_eq!(row.get::<_, i64>(7), user.created_epoch);
    }
    // orders (the one bad order is a reject, not a row)
    let rows = client
        .query(
            "SELECT id, dynamo_pk, user_id, total::text, status, items::text, shipping_address::text, ship_city, \
             (extract(epoch FROM created_at))::int8, extra::text FROM orders ORDER BY id",
            &[],
        )
        .await?;
    assert_eq!(rows.len(), shop.orders.len());
    for (row, order) in rows.iter().zip(&shop.orders) {
        assert_eq!(row.get::<_, i32>(0), order.id);
        assert_eq!(row.get::<_, String>(1), format!("USER#{}", order.user_id));
        assert_eq!(
            row.get::<_, Option<i32>>(2),
            Some(order.user_id),
            "linked by finalize"
        );
        assert_eq!(row.get::<_, String>(3), cents(order.total_cents));
        assert_eq!(row.get::<_, String>(4), order.status);
        let items: Vec<Value> = order
            .items
            .iter()
            .map(|(p, q, c)| json!({"price": cents(*c).parse::<serde_json::Number>().unwrap(), "product_id": p, "quantity": q}))
            .collect();
        assert_eq!(json_at(row, 5), Value::Array(items));
        assert_eq!(json_at(row, 6), json!({"city": order.ship_city}));
        assert_eq!(row.get::<_, String>(7), order.ship_city);
        assert_eq!(row.get::<_, i64>(8), order.created_epoch);
        let extra = order.coupon.as_ref().map(|c| json!({"coupon": c}));
        assert_eq!(json_opt(row, 9), extra);
    }
    // products
    let rows = client
        .query(
            "SELECT id, name, description, price::text, category, attributes::text FROM products ORDER BY id",
            &[],
        )
        .await?;
    assert_eq!(rows.len(), shop.products.len());
    for (row, product) in rows.iter().zip(&shop.products) {
        assert_eq!(row.get::<_, i32>(0), product.id);
        assert_eq!(row.get::<_, String>(1), product.name);
        assert_eq!(row.get::<_, String>(2), product.description);
        assert_eq!(row.get::<_, String>(3), cents(product.price_cents));
        assert_eq!(row.get::<_, String>(4), product.category);
        assert_eq!(json_at(row, 5), json!({"color": product.color}));
    }
    // reviews
    let rows = client
        .query(
            "SELECT id, product_id, user_id, rating, title, body, extra::text FROM reviews ORDER BY id",
            &[],
        )
        .await?;
    assert_eq!(rows.len(), shop.reviews.len());
    for (row, review) in rows.iter().zip(&shop.reviews) {
        assert_eq!(row.get::<_, i32>(0), review.id);
        assert_eq!(row.get::<_, i32>(1), review.product_id);
        assert_eq!(
            row.get::<_, Option<i32>>(2),
            Some(review.user_id),
            "linked by finalize"
        );
        assert_eq!(row.get::<_, i16>(3), review.rating);
        assert_eq!(row.get::<_, String>(4), review.title);
        assert_eq!(row.get::<_, String>(5), review.text);
        assert_eq!(json_opt(row, 6), None);
    }
    // sessions: only those whose TTL had not passed at the export time
    let rows = client
        .query(
            "SELECT dynamo_sk, user_id, (extract(epoch FROM expires_at))::int8, data::text FROM sessions ORDER BY dynamo_sk",
            &[],
        )
        .await?;
    let mut live: Vec<_> = shop.live_sessions();
    live.sort_by_key(|s| format!("SESSION#{}", s.id));
    assert_eq!(rows.len(), live.len());
    for (row, session) in rows.iter().zip(live) {
        assert_eq!(row.get::<_, String>(0), format!("SESSION#{}", session.id));
        assert_eq!(row.get::<_, i32>(1), session.user_id);
        assert_eq!(row.get::<_, i64>(2), session.ttl);
        assert_eq!(json_at(row, 3), json!({"device": "phone"}));
    }
    Ok(())
}

/// Exact cents of decimal text (`"12.5"`, `"12.50"`, `"12"`).
fn to_cents(text: &str) -> i64 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = format!("{frac:0<2}");
    assert!(
        frac[2..].chars().all(|c| c == '0'),
        "{text} has more than cents"
    );
    int.parse::<i64>().unwrap() * 100 + frac[..2].parse::<i64>().unwrap()
}

/// The report's `[[verify]]` results against the generator's numbers.
fn assert_guide_queries(report: &Value, shop: &Shop) {
    let checks = report["verification"]
        .as_array()
        .expect("verification results");
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report:#}"))
    };
    let counts: BTreeMap<String, String> = find("row counts per entity")["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                r[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected_counts: BTreeMap<String, String> = [
        ("users", shop.users.len()),
        ("orders", shop.orders.len()),
        ("products", shop.products.len()),
        ("reviews", shop.reviews.len()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(counts, expected_counts);
    let orphans = find("orphaned orders");
    assert_eq!(orphans["rows"], json!([]));
    assert_eq!(orphans["problem"], Value::Null);
    let lifetime = find("lifetime value");
    assert_eq!(
        lifetime["columns"],
        json!([
            "name",
            "order_count",
            "lifetime_value",
            "avg_order",
            "last_order"
        ])
    );
    let expected = expected_lifetime_values(shop);
    assert!(
        !expected.is_empty(),
        "the generator makes some big spenders"
    );
    let rows = lifetime["rows"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len(), "{lifetime:#}");
    for (row, (name, count, sum)) in rows.iter().zip(&expected) {
        assert_eq!(row[0], name.as_str());
        assert_eq!(row[1], count.to_string());
        assert_eq!(to_cents(row[2].as_str().unwrap()), *sum, "{row}");
        let avg: f64 = row[3].as_str().unwrap().parse().unwrap();
        assert!(
            (avg - *sum as f64 / 100.0 / *count as f64).abs() < 1e-6,
            "{row}"
        );
    }
}

/// The guide's lifetime-value query, computed from the generator: (name, orders, sum) of users
/// whose shipped or delivered orders total over 500, largest first, at most 20.
fn expected_lifetime_values(shop: &Shop) -> Vec<(String, i64, i64)> {
    let mut by_name: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for order in shop
        .orders
        .iter()
        .filter(|o| o.status == "shipped" || o.status == "delivered")
    {
        let user = shop.users.iter().find(|u| u.id == order.user_id).unwrap();
        let entry = by_name.entry(user.name.clone()).or_default();
        entry.0 += 1;
        entry.1 += order.total_cents;
    }
    let mut rows: Vec<(String, i64, i64)> = by_name
        .into_iter()
        .filter(|(_, (_, sum))| *sum > 50_000) // cents: over 500
        .map(|(name, (count, sum))| (name, count, sum))
        .collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    rows.truncate(20);
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn the_migration_guide_shop_lands_normalized_and_verified() -> anyhow::Result<()> {
    let loaded = prepared("guide_shop", 77).await?;
    let output = migrate(&loaded, &[])?;
    assert_exit(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let shop = &loaded.shop;
    assert_tables_match(&loaded.url, shop).await?;

    // Counts: the bad lines are rejects with reasons, the expired sessions are filtered.
    let expired = (shop.sessions.len() - shop.live_sessions().len()) as u64;
    assert_eq!(report["rows_rejected"], shop.bad_lines.len(), "{report:#}");
    assert_eq!(report["rows_filtered"], expired, "{report:#}");
    let loaded_rows = shop.users.len()
        + shop.orders.len()
        + shop.products.len()
        + shop.reviews.len()
        + shop.live_sessions().len();
    assert_eq!(report["rows_loaded"], loaded_rows as u64);
    assert_eq!(report["table_rows"], loaded_rows as u64);
    let client = connect(&loaded.url).await?;
    let rejects = client
        .query("SELECT reason FROM ferry.rejects ORDER BY reason", &[])
        .await?;
    let reasons: Vec<String> = rejects.iter().map(|r| r.get(0)).collect();
    assert_eq!(reasons.len(), shop.bad_lines.len());
    for (_, words) in &shop.bad_lines {
        assert!(
            reasons.iter().any(|r| r.contains(words)),
            "{reasons:?} lacks {words}"
        );
    }

    // finalize linked the keys and added the constraints and indexes.
    let constraints: BTreeSet<String> = client
        .query(
            "SELECT conname::text FROM pg_constraint WHERE contype = 'f'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        constraints,
        [
            "orders_user_id_fkey",
            "reviews_product_id_fkey",
            "reviews_user_id_fkey"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let not_null: String = client
        .query_one(
            "SELECT is_nullable::text FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'user_id'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(not_null, "NO");
    let fts: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_reviews_fts'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(fts, 1);

    // The guide's validation queries, in the report, against numbers computed from the generator.
    assert_guide_queries(&report, shop);

    // `verify` runs the queries again on demand and records them.
    let run_id = report["run_id"].as_str().unwrap();
    let verified = run_coordinator(
        &[
            "verify",
            "--run-id",
            run_id,
            "--target",
            &loaded.url,
            "--config",
            CONFIG,
            "--json",
        ],
        &[],
    )?;
    assert_eq!(verified.status.code(), Some(0), "{}", stderr_of(&verified));
    assert_guide_queries(&serde_json::from_slice(&verified.stdout)?, shop);

    // finalize again: the post-load steps ran once and are not repeated; still verified.
    let again = run_coordinator(
        &[
            "finalize",
            "--run-id",
            run_id,
            "--target",
            &loaded.url,
            "--config",
            CONFIG,
            "--json",
        ],
        &[],
    )?;
    assert_eq!(again.status.code(), Some(0), "{}", stderr_of(&again));
    let again: Value = serde_json::from_slice(&again.stdout)?;
    assert_eq!(again["post_load"], json!([]));
    assert_eq!(again["already_complete"], true);

    // A second run finds the run complete and changes nothing.
    let again = migrate(&loaded, &[])?;
    assert_eq!(again.status.code(), Some(0), "{}", stderr_of(&again));
    assert_eq!(
        serde_json::from_slice::<Value>(&again.stdout)?["already_complete"],
        true
    );
    assert_tables_match(&loaded.url, shop).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routed_chunk_commits_once_across_its_tables() -> anyhow::Result<()> {
    let loaded = prepared("guide_crash", 78).await?;
    // Die between the third chunk's checkpoint update and its COMMIT, then after a later COPY.
    for failpoint in ["after_checkpoint=exit@3", "after_copy=exit@5"] {
        let output = migrate(
            &loaded,
            &[
                ("FERRY_FAILPOINTS", failpoint),
                ("FERRY_LOAD__WORKERS", "1"),
            ],
        )?;
        assert_eq!(
            output.status.code(),
            Some(86),
            "{failpoint}: {}",
            stderr_of(&output)
        );
    }
    let client = connect(&loaded.url).await?;
    let partial: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM orders) + \
             (SELECT count(*) FROM products) + (SELECT count(*) FROM reviews) + (SELECT count(*) FROM sessions)",
            &[],
        )
        .await?
        .get(0);
    let committed: i64 = client
        .query_one("SELECT sum(loaded_rows)::int8 FROM ferry.shards", &[])
        .await?
        .get(0);
    assert_eq!(
        partial, committed,
        "rows in the tables are exactly the committed chunks'"
    );
    assert!(committed > 0);
    let output = migrate(&loaded, &[])?;
    assert_exit(&output, 0);
    assert_tables_match(&loaded.url, &loaded.shop).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_migration_guide_shop_on_heliosdb() -> anyhow::Result<()> {
    let server = HeliosServer::start()?;
    let loaded = prepared_at(server.url(), 79, Some(server))?;
    let output = migrate(&loaded, &[])?;
    assert_exit(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let shop = &loaded.shop;
    assert_eq!(report["rows_rejected"], shop.bad_lines.len(), "{report:#}");
    let expired = (shop.sessions.len() - shop.live_sessions().len()) as u64;
    assert_eq!(report["rows_filtered"], expired);
    assert!(
        report["load_path"].as_str().unwrap().contains("HeliosDB"),
        "{report:#}"
    );
    assert_guide_queries(&report, shop);
    assert_heliosdb_tables_match(&loaded.url, shop).await?;
    let embedding = query_text(
        &loaded.url,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'products' AND column_name = 'embedding'",
    )
    .await?;
    assert_eq!(
        embedding.as_deref(),
        Some("1"),
        "the VECTOR column exists where the target has the type"
    );
    Ok(())
}

/// A rule using every column type, on both targets: the values read back as text must be exact.
async fn every_type_round_trips(target: &str) -> anyhow::Result<()> {
    use ferry_tests::gen::{add_data_file, generate_export, GenOptions};
    let dir = tempfile::tempdir()?;
    let mut export = generate_export(
        dir.path(),
        &GenOptions {
            items: 0,
            files: 0,
            edge_cases: false,
            ..GenOptions::default()
        },
    )?;
    let line = json!({"Item": {
        "PK": {"S": "T#1"}, "SK": {"S": "ALL"},
        "i8": {"N": "-9223372036854775808"},
        "f8": {"N": "0.1"},
        "flag": {"BOOL": true},
        "blob": {"B": "AAEC/w=="},
        "tags": {"SS": ["b", "a \"q\""]},
        "nums": {"NS": ["1.50", "-2E3"]},
        "big": {"N": "12345678901234567890.123456789"},
        "doc": {"M": {"z": {"N": "1"}, "a": {"L": [{"S": "x"}]}}},
        "at": {"N": "1700000000.25"}
    }})
    .to_string();
    add_data_file(&mut export, &[line])?;
    let config = dir.path().join("types.toml");
    std::fs::write(
        &config,
        r#"
[mapping]
key = ["PK", "SK"]
[[routing.rules]]
name = "all types"
table = "typed"
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "i8", from = "i8", type = "int8" },
  { name = "f8", from = "f8", type = "float8" },
  { name = "flag", from = "flag", type = "boolean" },
  { name = "blob", from = "blob", type = "bytea" },
  { name = "tags", from = "tags", type = "text[]" },
  { name = "nums", from = "nums", type = "numeric[]" },
  { name = "big", from = "big", type = "numeric" },
  { name = "doc", from = "doc", type = "jsonb" },
  { name = "at", from = "at", type = "timestamptz" },
]
"#,
    )?;
    let (url, _server) = match target {
        "postgres" => (shared_cluster().create_database("every_type").await?, None),
        _ => {
            let server = HeliosServer::start()?;
            (server.url(), Some(server))
        }
    };
    let output = run_coordinator(
        &[
            "migrate",
            "--export",
            &export.root.display().to_string(),
            "--target",
            &url,
            "--config",
            &config.display().to_string(),
        ],
        &[],
    )?;
    assert_exit(&output, 0);
    let client = connect(&url).await?;
    let mut row = Vec::new();
    for message in client
        .simple_query(
            "SELECT i8::text, f8::text, flag::text, blob::text, tags::text, nums::text, \
             big::text, doc::text, (extract(epoch FROM at) * 1000)::int8::text FROM typed",
        )
        .await?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = message {
            row = (0..r.len())
                .map(|i| r.get(i).unwrap_or("NULL").to_string())
                .collect();
        }
    }
    // HeliosDB renders arrays with spaces and without escaping, and jsonb::text in quotes (its
    // text output, not the stored values: those are the same).
    let (tags, nums) = match target {
        "postgres" => (r#"{b,"a \"q\""}"#, "{1.50,-2000}"),
        _ => (r#"{"b", "a "q""}"#, "{1.50, -2000}"),
    };
    let doc: Value = serde_json::from_str(row[7].trim_matches('\''))?;
    assert_eq!(doc, json!({"a": ["x"], "z": 1}));
    assert_eq!(
        &row[..7],
        [
            "-9223372036854775808",
            "0.1",
            "true",
            r"\x000102ff",
            // Sets keep the order the export wrote.
            tags,
            nums,
            "12345678901234567890.123456789",
        ]
        .map(String::from)
        .as_slice()
    );
    assert_eq!(row[8], "1700000000250");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_column_type_round_trips_on_postgres() -> anyhow::Result<()> {
    every_type_round_trips("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_column_type_round_trips_on_heliosdb() -> anyhow::Result<()> {
    every_type_round_trips("heliosdb").await
}

/// The shop's tables on HeliosDB, read as text (its binary results are limited): every user, order
/// and review value by value, the live sessions, and the foreign keys.
async fn assert_heliosdb_tables_match(url: &str, shop: &Shop) -> anyhow::Result<()> {
    // Values, read as text (HeliosDB's binary results are limited).
    let client = connect(url).await?;
    let text_rows = |sql: &'static str| {
        let client = &client;
        async move {
            let mut rows = Vec::new();
            for message in client.simple_query(sql).await? {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).unwrap_or("NULL").to_string())
                            .collect::<Vec<_>>(),
                    );
                }
            }
            anyhow::Ok(rows)
        }
    };
    let users = text_rows("SELECT id, email, name FROM users ORDER BY id").await?;
    let expected: Vec<Vec<String>> = shop
        .users
        .iter()
        .map(|u| {
            vec![
                u.id.to_string(),
                u.raw_email.trim().to_lowercase(),
                u.name.clone(),
            ]
        })
        .collect();
    assert_eq!(users, expected);
    let orders = text_rows("SELECT id, user_id, total, status FROM orders ORDER BY id").await?;
    assert_eq!(orders.len(), shop.orders.len());
    for (row, order) in orders.iter().zip(&shop.orders) {
        assert_eq!(row[0], order.id.to_string());
        assert_eq!(row[1], order.user_id.to_string(), "linked by finalize");
        assert_eq!(to_cents(&row[2]), order.total_cents);
        assert_eq!(row[3], order.status);
    }
    let reviews =
        text_rows("SELECT id, product_id, user_id, rating FROM reviews ORDER BY id").await?;
    let expected: Vec<Vec<String>> = shop
        .reviews
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.product_id.to_string(),
                r.user_id.to_string(),
                r.rating.to_string(),
            ]
        })
        .collect();
    assert_eq!(reviews, expected);
    let sessions = text_rows("SELECT count(*) FROM sessions").await?;
    assert_eq!(sessions[0][0], shop.live_sessions().len().to_string());
    let constraints = text_rows("SELECT conname FROM pg_constraint ORDER BY conname").await?;
    for name in [
        "orders_user_id_fkey",
        "reviews_product_id_fkey",
        "reviews_user_id_fkey",
    ] {
        assert!(constraints.iter().any(|c| c[0] == name), "{constraints:?}");
    }
    Ok(())
}

/// A fresh shop of `users` users and `products` products on `target` (`postgres` or `heliosdb`).
async fn shop_on(
    target: &str,
    name: &str,
    seed: u64,
    users: usize,
    products: usize,
) -> anyhow::Result<Loaded> {
    let (url, server) = match target {
        "postgres" => (shared_cluster().create_database(name).await?, None),
        _ => {
            let server = HeliosServer::start()?;
            (server.url(), Some(server))
        }
    };
    let dir = tempfile::tempdir()?;
    let shop = generate_shop(seed, users, products);
    let export = write_shop_export(dir.path(), &shop, seed, 4)?;
    Ok(Loaded {
        url,
        shop,
        export_root: export.root.display().to_string(),
        export,
        _dir: dir,
        _server: server,
    })
}

async fn assert_shop(target: &str, loaded: &Loaded) -> anyhow::Result<()> {
    match target {
        "postgres" => assert_tables_match(&loaded.url, &loaded.shop).await,
        _ => assert_heliosdb_tables_match(&loaded.url, &loaded.shop).await,
    }
}

/// Polls `sql` (one value) until `done` holds for it; fails after two minutes.
async fn wait_until(url: &str, sql: &str, done: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let value = query_text(url, sql)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        if done(&value) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no progress: {sql} gives {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The post-load steps that apply on `target`, in the guide config.
fn guide_steps(target: &str) -> usize {
    let settings =
        ferry_shared::config::load_settings(Some(std::path::Path::new(CONFIG))).expect("config");
    settings
        .post_load
        .iter()
        .filter(|s| match s.only_on {
            None => true,
            Some(ferry_shared::config::TargetName::Postgres) => target == "postgres",
            Some(ferry_shared::config::TargetName::Heliosdb) => target == "heliosdb",
        })
        .count()
}

/// The issue's reproduction: `migrate` killed during the post-load steps, then the same
/// `migrate` again. Here it dies after each step in turn (the step's work done, its mark not yet
/// written), and each rerun resumes at the step it died in: every step runs, none twice, and the
/// run ends verified.
async fn post_load_crash_at_every_step(target: &str) -> anyhow::Result<()> {
    let loaded = shop_on(target, "guide_post_load_crash", 81, 120, 30).await?;
    let steps = guide_steps(target);
    assert!(steps >= 10, "{steps}");
    // The first migrate dies in step 1; each later one re-runs the step it died in (the first
    // failpoint hit) and dies in the next (the second).
    let first = migrate(
        &loaded,
        &[("FERRY_FAILPOINTS", "after_post_load_step=exit@1")],
    )?;
    assert_exit(&first, 86);
    for step in 2..=steps {
        let output = migrate(
            &loaded,
            &[("FERRY_FAILPOINTS", "after_post_load_step=exit@2")],
        )?;
        assert_eq!(
            output.status.code(),
            Some(86),
            "step {step}: {}",
            stderr_of(&output)
        );
    }
    let output = migrate(&loaded, &[])?;
    assert_exit(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout)?;
    // The config's steps (on PostgreSQL the tables' keys, built after the load, come first: the
    // first migrate built them before it died in step 1).
    let all = report["post_load"].as_array().unwrap();
    let keys = all
        .iter()
        .filter(|l| {
            l["step"]
                .as_str()
                .is_some_and(|s| s.ends_with("(the key, built after the load)"))
        })
        .count();
    if target == "postgres" {
        assert!(keys > 0, "{all:#?}");
    }
    let lines = &all[keys..];
    let done_earlier = lines
        .iter()
        .filter(|l| l["state"] == "done earlier")
        .count();
    assert_eq!(done_earlier, steps - 1, "{lines:#?}");
    assert_eq!(lines[steps - 1]["state"], "ran", "{lines:#?}");
    for line in &lines[..steps] {
        assert!(line["seconds"].as_f64().is_some(), "{line}");
    }
    assert_shop(target, &loaded).await?;
    // Each step ran once: the ledger has every step done, and a finalize changes nothing.
    let done = query_text(
        &loaded.url,
        "SELECT count(*) FROM ferry.steps WHERE state = 'done'",
    )
    .await?;
    assert_eq!(done, Some(steps.to_string()));

    // A kill -9 while a step runs (a fresh run of the same shop): the rerun resumes and verifies.
    let loaded = shop_on(target, "guide_post_load_kill", 82, 120, 30).await?;
    let mut child = std::process::Command::new(binary("ferry-coordinator"))
        .args([
            "migrate",
            "--export",
            &loaded.export_root,
            "--target",
            &loaded.url,
            "--config",
            CONFIG,
        ])
        .env("FERRY_FAILPOINTS", "after_post_load_step=sleep3000@3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    wait_until(
        &loaded.url,
        "SELECT count(*) FROM ferry.steps WHERE state = 'done'",
        |v| v == "2",
    )
    .await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill()?;
    child.wait()?;
    let output = migrate(&loaded, &[])?;
    assert_exit(&output, 0);
    assert_shop(target, &loaded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_post_load_steps_resumes_on_postgres() -> anyhow::Result<()> {
    post_load_crash_at_every_step("postgres").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_post_load_steps_resumes_on_heliosdb() -> anyhow::Result<()> {
    post_load_crash_at_every_step("heliosdb").await
}

/// Routed runs on both targets: an exit between every pair of load steps, then kill -9 of a worker
/// mid-load and three racing workers; every table ends exactly as the generator says.
async fn routed_crashes(target: &str) -> anyhow::Result<()> {
    for (i, point) in [
        "after_read",
        "after_copy",
        "after_checkpoint",
        "after_commit",
    ]
    .iter()
    .enumerate()
    {
        let loaded = shop_on(target, &format!("routed_crash_{i}"), 90 + i as u64, 300, 40).await?;
        let failpoint = format!("{point}=exit@3");
        let output = migrate(
            &loaded,
            &[
                ("FERRY_FAILPOINTS", failpoint.as_str()),
                ("FERRY_LOAD__WORKERS", "1"),
            ],
        )?;
        assert_eq!(
            output.status.code(),
            Some(86),
            "{point}: {}",
            stderr_of(&output)
        );
        let output = migrate(&loaded, &[])?;
        assert_exit(&output, 0);
        assert_shop(target, &loaded).await?;
    }
    // kill -9 and racing workers.
    let loaded = shop_on(target, "routed_race", 99, 2_000, 200).await?;
    let env = [
        ("FERRY_LOAD__CHUNK_LINES", "211"),
        ("FERRY_LOAD__BLOCK_LINES", "53"),
    ];
    let plan = run_coordinator(
        &[
            "plan",
            "--export",
            &loaded.export_root,
            "--target",
            &loaded.url,
            "--config",
            CONFIG,
        ],
        &env,
    )?;
    assert_exit(&plan, 0);
    let run_id = String::from_utf8_lossy(&plan.stdout).trim().to_string();
    let worker = || {
        std::process::Command::new(binary("ferry-worker"))
            .args([
                "--target",
                &loaded.url,
                "--run-id",
                &run_id,
                "--workers",
                "2",
                "--config",
                CONFIG,
            ])
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
    };
    let mut victim = worker()?;
    wait_until(
        &loaded.url,
        "SELECT COALESCE(sum(committed_lines), 0) FROM ferry.shards",
        |v| v != "0",
    )
    .await?;
    victim.kill()?;
    victim.wait()?;
    let racers: Vec<_> = (0..3).map(|_| worker()).collect::<Result<_, _>>()?;
    for racer in racers {
        let output = racer.wait_with_output()?;
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    }
    let finalize = run_coordinator(
        &[
            "finalize",
            "--target",
            &loaded.url,
            "--run-id",
            &run_id,
            "--config",
            CONFIG,
        ],
        &[],
    )?;
    assert_exit(&finalize, 0);
    assert_shop(target, &loaded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_runs_survive_crashes_and_races_on_postgres() -> anyhow::Result<()> {
    routed_crashes("postgres").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_runs_survive_crashes_and_races_on_heliosdb() -> anyhow::Result<()> {
    routed_crashes("heliosdb").await
}

/// An order whose user does not exist: loaded (nothing is dropped), listed by the "orphaned
/// orders" verification, and on PostgreSQL named by the failing foreign-key step.
async fn orphans(target: &str) -> anyhow::Result<()> {
    let mut loaded = shop_on(target, "guide_orphans", 71, 60, 10).await?;
    ferry_tests::gen::add_data_file(
        &mut loaded.export,
        &[r#"{"Item":{"PK":{"S":"USER#999999"},"SK":{"S":"ORDER#999999"},"total":{"N":"10.00"},"status":{"S":"pending"},"items":{"L":[]},"created_at":{"N":"1700000000"}}}"#.to_string()],
    )?;
    let output = migrate(&loaded, &[])?;
    assert_exit(&output, 1);
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let problems = report["problems"].to_string();
    assert!(problems.contains("orphaned orders"), "{problems}");
    let orphans = report["verification"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "orphaned orders")
        .unwrap()
        .clone();
    assert_eq!(orphans["rows"], json!([["999999"]]), "{orphans:#}");
    if target == "postgres" {
        assert!(
            problems.contains("orders_user_id_fkey") && problems.contains("999999"),
            "the foreign-key step names the orphan: {problems}"
        );
    }
    assert_eq!(
        query_text(&loaded.url, "SELECT count(*) FROM orders WHERE id = 999999").await?,
        Some("1".into()),
        "the orphan is loaded, not dropped"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reported_not_dropped() -> anyhow::Result<()> {
    orphans("postgres").await?;
    orphans("heliosdb").await
}

/// The guide's scenario at realistic volume (about 100k items) on both targets, value by value.
async fn guide_at_volume(target: &str) -> anyhow::Result<()> {
    let loaded = shop_on(target, "guide_100k", 7, 22_000, 2_200).await?;
    let output = run_coordinator(
        &[
            "migrate",
            "--export",
            &loaded.export_root,
            "--target",
            &loaded.url,
            "--config",
            CONFIG,
            "--json",
        ],
        &[],
    )?;
    assert_exit(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let items = report["rows_loaded"].as_u64().unwrap()
        + report["rows_rejected"].as_u64().unwrap()
        + report["rows_filtered"].as_u64().unwrap();
    assert!(items >= 100_000, "{items} items");
    assert_guide_queries(&report, &loaded.shop);
    assert_shop(target, &loaded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_at_100k_items_on_postgres() -> anyhow::Result<()> {
    guide_at_volume("postgres").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_at_100k_items_on_heliosdb() -> anyhow::Result<()> {
    guide_at_volume("heliosdb").await
}

/// The guide config with orders.user_id filled after the load by a `link` step (as when the key
/// does not carry the id) instead of from the key.
fn link_config(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let guide = std::fs::read_to_string(CONFIG)?;
    let derived =
        "  { name = \"user_id\", from = \"PK\", type = \"int4\", regex = '^USER#(\\d+)$' },\n";
    anyhow::ensure!(guide.contains(derived), "the guide config changed");
    let config = guide
        .replacen(derived, "", 1)
        .replacen("    user_id INT4 NOT NULL,\n    total", "    user_id INT4,\n    total", 1)
        .replacen(
            "[[post_load]]\nsql = \"ALTER TABLE orders ADD CONSTRAINT",
            "[[post_load]]\nlink = { table = \"orders\", column = \"user_id\", from_table = \"users\", from_column = \"id\", match = [[\"dynamo_pk\", \"dynamo_pk\"]] }\n\n[[post_load]]\nsql = \"ALTER TABLE orders ADD CONSTRAINT",
            1,
        );
    anyhow::ensure!(config.contains("link = {"), "no link step added");
    let path = dir.join("link.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// A `link` step fills a foreign key the keys do not carry, on both targets (PostgreSQL with
/// `UPDATE … FROM`, HeliosDB by key from a mapping Ferry computes), and names the orphans.
async fn link_step(target: &str) -> anyhow::Result<()> {
    // Small: on HeliosDB an UPDATE of a table with a CHECK constraint (orders has one) costs about
    // 10-30 ms a row (measured on 4.41.1), so the link is measured in the benchmark, not here.
    let mut loaded = shop_on(target, "guide_link", 83, 400, 40).await?;
    ferry_tests::gen::add_data_file(
        &mut loaded.export,
        &[r#"{"Item":{"PK":{"S":"USER#888888"},"SK":{"S":"ORDER#888888"},"total":{"N":"1.00"},"status":{"S":"pending"},"items":{"L":[]}}}"#.to_string()],
    )?;
    let config = link_config(loaded._dir.path())?;
    let output = run_coordinator(
        &[
            "migrate",
            "--export",
            &loaded.export_root,
            "--target",
            &loaded.url,
            "--config",
            config.to_str().unwrap(),
            "--json",
        ],
        &[],
    )?;
    // The orphan order makes the run unverified (on PostgreSQL the foreign key refuses it too).
    assert_exit(&output, 1);
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let link = report["post_load"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["step"]
                .as_str()
                .unwrap()
                .starts_with("link orders.user_id")
        })
        .unwrap_or_else(|| panic!("{report:#}"))
        .clone();
    let note = link["note"].as_str().unwrap();
    assert!(
        note.starts_with(&format!("{} rows linked", loaded.shop.orders.len()))
            && note.contains("1 rows have no counterpart in users (orphans, left NULL), e.g. dynamo_pk=USER#888888"),
        "{note}"
    );
    let client = connect(&loaded.url).await?;
    let mut linked = std::collections::BTreeMap::new();
    for message in client
        .simple_query("SELECT id::text, user_id::text FROM orders")
        .await?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            linked.insert(
                row.get(0).unwrap().parse::<i32>()?,
                row.get(1).map(|v| v.parse::<i32>()).transpose()?,
            );
        }
    }
    assert_eq!(linked.len(), loaded.shop.orders.len() + 1);
    for order in &loaded.shop.orders {
        assert_eq!(linked[&order.id], Some(order.user_id), "order {}", order.id);
    }
    assert_eq!(linked[&888_888], None, "the orphan stays, NULL");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_step_fills_foreign_keys_and_names_orphans() -> anyhow::Result<()> {
    link_step("postgres").await?;
    link_step("heliosdb").await
}

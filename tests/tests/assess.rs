//! `ferry-coordinator assess` on exports it did not shape: the migration guide's shop (its five
//! entities, the reference from reviews to users, the sessions' TTL, the junk item) with every
//! count checked against the export's lines read here with serde_json, and the same shop written
//! as Amazon Ion; then an export damaged on purpose (a duplicate key, a line that does not parse,
//! a 30-digit number, a dotted name, a 3,000-byte key, an item without its sort key), each
//! finding named with its count and its file and line; and the draft config of a 100k-item shop
//! export loaded as written into PostgreSQL and HeliosDB, then written back by `export-back` and
//! compared item by item with the export.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use ferry_tests::gen::{add_data_file, generate_export, GenOptions};
use ferry_tests::harness::run_coordinator;
use ferry_tests::shop::{generate_shop, write_shop_export};
use serde_json::Value;

fn assess(export: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let export = export.display().to_string();
    let mut all = vec!["assess", "--export", &export, "--json"];
    all.extend_from_slice(args);
    let output = run_coordinator(&all, &[])?;
    anyhow::ensure!(
        output.status.success(),
        "assess failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The word before the first `#` (or the whole value): `USER#12` → `USER`.
fn prefix(value: &str) -> String {
    value.split('#').next().unwrap_or_default().to_string()
}

fn finding<'a>(assessment: &'a Value, kind: &str) -> Option<&'a Value> {
    assessment["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
}

fn entity_counts(assessment: &Value) -> BTreeMap<(String, String), (String, u64)> {
    assessment["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let patterns = e["key_patterns"].as_array().unwrap();
            (
                (
                    prefix(patterns[0].as_str().unwrap()),
                    prefix(patterns[1].as_str().unwrap()),
                ),
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["items"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn the_shop_export_shows_its_five_entities_and_their_reference() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shop = generate_shop(11, 3_000, 300);
    let export = write_shop_export(dir.path(), &shop, 11, 6)?;
    // The expected groups, read here: (PK word, SK word) → items.
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in shop.lines(11) {
        let item: Value = serde_json::from_str(&line)?;
        let pk = item["Item"]["PK"]["S"].as_str().unwrap();
        let sk = item["Item"]["SK"]["S"].as_str().unwrap();
        *expected.entry((prefix(pk), prefix(sk))).or_default() += 1;
    }
    let assessment = assess(&export.root, &["--full"])?;
    assert_eq!(
        assessment["items"].as_u64(),
        Some(shop.lines(11).len() as u64)
    );
    assert_eq!(assessment["mode"], "full");
    let key = &assessment["key"];
    assert_eq!(key["attributes"], serde_json::json!(["PK", "SK"]), "{key}");
    assert_eq!(
        (key["proposed"].as_bool(), key["duplicates"].as_u64()),
        (Some(true), Some(0))
    );
    assert_eq!(key["share_checked"].as_f64(), Some(1.0));
    let found = entity_counts(&assessment);
    let counts: BTreeMap<(String, String), u64> =
        found.iter().map(|(k, (_, n))| (k.clone(), *n)).collect();
    assert_eq!(counts, expected);
    let name = |pk: &str, sk: &str| found[&(pk.to_string(), sk.to_string())].0.clone();
    // The five entities of deploy/examples/migration-guide.toml, by the names its tables have.
    assert_eq!(
        [
            name("USER", "PROFILE"),
            name("USER", "ORDER"),
            name("USER", "SESSION"),
            name("PRODUCT", "METADATA"),
            name("PRODUCT", "REVIEW")
        ],
        ["users", "orders", "sessions", "products", "reviews"]
    );
    assert_eq!(found.len(), 6, "the five and the junk item: {found:?}");
    let references = assessment["foreign_keys"].as_array().unwrap();
    assert_eq!(references.len(), 1, "{references:?}");
    assert_eq!(references[0]["attribute"], "user_pk");
    assert_eq!(references[0]["references"], "users");
    assert_eq!(references[0]["in_entities"], serde_json::json!(["reviews"]));
    let ttl = finding(&assessment, "ttl_attribute").expect("the sessions' ttl");
    assert_eq!(ttl["count"].as_u64(), Some(shop.sessions.len() as u64));
    let rare = finding(&assessment, "rare_key_patterns").expect("the junk item");
    assert_eq!(rare["count"].as_u64(), Some(1));
    assert!(
        rare["examples"][0].as_str().unwrap().contains("JUNK#1"),
        "{rare}"
    );
    assert!(finding(&assessment, "duplicate_keys").is_none());
    // Attributes: the orders' totals are exact decimals, the users' created_at ISO text.
    let attribute = |name: &str| {
        assessment["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()
            .clone()
    };
    let total = attribute("total");
    let totals: Vec<String> = shop
        .lines(11)
        .iter()
        .filter_map(|l| {
            let item: Value = serde_json::from_str(l).ok()?;
            item["Item"]["total"]["N"].as_str().map(str::to_string)
        })
        .collect();
    let as_cents = |t: &str| {
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let frac = format!("{frac:0<3}");
        int.parse::<i64>().unwrap() * 1000 + frac[..3].parse::<i64>().unwrap()
    };
    let max = totals.iter().max_by_key(|t| as_cents(t)).unwrap();
    assert_eq!(
        as_cents(total["numbers"]["max"].as_str().unwrap()),
        as_cents(max),
        "{total}"
    );
    let users = shop.users.len() as u64;
    assert_eq!(attribute("created_at")["iso8601"].as_u64(), Some(users));
    assert_eq!(attribute("profile")["max_depth"].as_u64(), Some(2));

    // A sample reads at most what it is asked, and finds the same entities' shapes.
    let sampled = assess(&export.root, &["--sample", "600", "--key", "PK,SK"])?;
    assert_eq!(sampled["mode"], "sample");
    assert_eq!(sampled["items"].as_u64(), Some(600));
    assert_eq!(sampled["key"]["proposed"].as_bool(), Some(false));

    // The same shop written as Amazon Ion: the same groups.
    let ion = ferry_tests::history::to_ion(&export.export_dir, &dir.path().join("ion"))?;
    let from_ion = assess(&ion, &["--full", "--key", "PK,SK"])?;
    let ion_counts: BTreeMap<(String, String), u64> = entity_counts(&from_ion)
        .into_iter()
        .map(|(k, (_, n))| (k, n))
        .collect();
    assert_eq!(ion_counts, expected);
    Ok(())
}

#[test]
fn damaged_lines_are_findings_with_their_file_and_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut export = generate_export(
        dir.path(),
        &GenOptions {
            edge_cases: false,
            ..GenOptions::sized(5, 2_000, 2)
        },
    )?;
    let long_pk = format!("LONG#{}", "x".repeat(3_000));
    let lines = vec![
        r#"{"Item":{"PK":{"S":"DUP#1"},"SK":{"S":"A"},"n":{"N":"1"}}}"#.to_string(),
        r#"{"Item":{"PK":{"S":"DUP#1"},"SK":{"S":"A"},"n":{"N":"2"}}}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BAD#1"},"SK":{"S":"A"}"#.to_string(),
        r#"{"Item":{"PK":{"S":"BIG#1"},"SK":{"S":"A"},"big":{"N":"123456789012345678901234567890"}}}"#
            .to_string(),
        r#"{"Item":{"PK":{"S":"DOT#1"},"SK":{"S":"A"},"a.b":{"S":"x"}}}"#.to_string(),
        format!(r#"{{"Item":{{"PK":{{"S":"{long_pk}"}},"SK":{{"S":"A"}}}}}}"#),
        r#"{"Item":{"PK":{"S":"NOSK#1"}}}"#.to_string(),
    ];
    let file = add_data_file(&mut export, &lines)?;
    let file = file.display().to_string();
    // A data file cut in half: a finding, and the other files are still profiled.
    let cut = &export.data_files[0].path;
    let bytes = std::fs::read(cut)?;
    std::fs::write(cut, &bytes[..bytes.len() / 2])?;
    let assessment = assess(&export.root, &["--full", "--key", "PK,SK"])?;
    let at = |line: usize| format!("{file}:{line}");
    let duplicate = finding(&assessment, "duplicate_keys").expect("the duplicate");
    assert_eq!(duplicate["count"].as_u64(), Some(1));
    assert_eq!(
        duplicate["examples"][0].as_str().unwrap(),
        format!("{} and {}", at(1), at(2))
    );
    let bad = finding(&assessment, "bad_lines").expect("the bad line");
    assert_eq!(bad["count"].as_u64(), Some(1));
    assert!(
        bad["examples"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}: ", at(3))),
        "{bad}"
    );
    let big = finding(&assessment, "numbers_beyond_decimal96").expect("the 30-digit number");
    assert_eq!(big["count"].as_u64(), Some(1));
    assert_eq!(big["examples"][0], "123456789012345678901234567890");
    let dotted = finding(&assessment, "awkward_name").expect("the dotted name");
    assert!(
        dotted["what"].as_str().unwrap().contains("\"a.b\""),
        "{dotted}"
    );
    let long = finding(&assessment, "long_keys").expect("the long key");
    assert_eq!(long["count"].as_u64(), Some(1));
    assert!(
        long["examples"][0].as_str().unwrap().starts_with(&at(6)),
        "{long}"
    );
    let keyless = finding(&assessment, "keyless_items").expect("the item without SK");
    assert_eq!(keyless["count"].as_u64(), Some(1));
    assert_eq!(keyless["examples"][0].as_str().unwrap(), at(7));
    let unreadable = finding(&assessment, "unreadable_files").expect("the cut file");
    assert_eq!(unreadable["count"].as_u64(), Some(1));
    assert!(
        unreadable["examples"][0]
            .as_str()
            .unwrap()
            .contains(&cut.display().to_string()),
        "{unreadable}"
    );
    // The cut file's items are not counted; the other generated file's and the added lines are.
    let other = export.data_files[1].item_count;
    assert_eq!(
        assessment["items"].as_u64(),
        Some(other + lines.len() as u64 - 1)
    );
    assert_eq!(assessment["bad_lines"].as_u64(), Some(1));
    Ok(())
}

/// `assess --full --draft` of a 100k-item shop export, then `migrate --config` of the draft into
/// `url`: no reject and nothing in the catch-all table; then `export-back` of the run gives back
/// every item of the export exactly, declaring only derived columns and provenance.
async fn the_draft_loads_as_written_and_round_trips(url: &str, target: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shop = generate_shop(23, 21_000, 2_100);
    let export = write_shop_export(dir.path(), &shop, 23, 8)?;
    let drafts = dir.path().join("draft");
    let assessment = assess(
        &export.root,
        &["--full", "--draft", &drafts.display().to_string()],
    )?;
    let items = assessment["items"].as_u64().unwrap();
    assert!(items >= 100_000, "{items} items");
    let config = drafts.join(format!("ferry-{target}.toml"));
    let ddl = std::fs::read_to_string(drafts.join(format!("schema-{target}.sql")))?;
    for table in [
        "users",
        "orders",
        "sessions",
        "products",
        "reviews",
        "unrouted_items",
    ] {
        assert!(
            ddl.contains(&format!("CREATE TABLE IF NOT EXISTS \"{table}\"")),
            "{ddl}"
        );
    }
    let loaded = run_coordinator(
        &[
            "migrate",
            "--export",
            &export.root.display().to_string(),
            "--target",
            url,
            "--config",
            &config.display().to_string(),
            "--json",
        ],
        &[],
    )?;
    let report: Value = serde_json::from_slice(&loaded.stdout)
        .with_context(|| format!("migrate: {}", String::from_utf8_lossy(&loaded.stderr)))?;
    assert_eq!(loaded.status.code(), Some(0), "{report:#}");
    assert_eq!(report["rows_rejected"].as_u64(), Some(0), "{report:#}");
    assert_eq!(report["rows_loaded"].as_u64(), Some(items), "{report:#}");
    let client = ferry_tests::harness::connect(url).await?;
    let unrouted: i64 = client
        .query_one("SELECT count(*)::int8 FROM \"unrouted_items\"", &[])
        .await?
        .get(0);
    assert_eq!(unrouted, 0, "items no rule took");
    let run_id = report["run_id"].as_str().unwrap();
    let out = dir.path().join("rollback");
    let rolled = run_coordinator(
        &[
            "export-back",
            "--target",
            url,
            "--run-id",
            run_id,
            "--output",
            &out.display().to_string(),
            "--json",
        ],
        &[],
    )?;
    assert_eq!(
        rolled.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    let summary: Value = serde_json::from_slice(&rolled.stdout)?;
    // Derived columns and provenance; beside them export-back declares, for every typed or JSON
    // column of a routed table, what such a column could change (`column_type`: a value of
    // another type comes back in the column's; `null_or_absent`: a NULL and a missing attribute
    // are one SQL NULL; `plain_json`: sets and binary in JSON), with no item counted: the draft
    // types only attributes with one type and the shop has no set or binary, as the item-by-item
    // comparison below proves.
    let mut classes = std::collections::BTreeSet::new();
    for difference in summary["differences"].as_array().unwrap() {
        let class = difference["class"].as_str().unwrap();
        classes.insert(class.to_string());
        let counted = difference["items"].as_u64().unwrap_or(0);
        assert!(
            counted == 0 || class == "derived_column" || class == "provenance",
            "items differing beyond derived columns: {difference:#}"
        );
    }
    println!("declared by export-back: {classes:?}");
    assert!(classes.contains("derived_column"), "{classes:?}");
    let expected = ferry_tests::compare::read_source_items(&export.export_dir, &["PK", "SK"])?;
    let exported = ferry_tests::compare::read_source_items(&out.join("data"), &["PK", "SK"])?;
    assert_eq!(expected.len() as u64, items);
    let diffs = ferry_tests::compare::differences(&expected, &exported);
    assert!(
        diffs.is_empty(),
        "{} of {} items differ: {:#?}",
        diffs.len(),
        expected.len(),
        &diffs[..diffs.len().min(5)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_draft_loads_as_written_and_round_trips_on_postgres() -> anyhow::Result<()> {
    let url = ferry_tests::pg::shared_cluster()
        .create_database("assess_draft")
        .await?;
    the_draft_loads_as_written_and_round_trips(&url, "postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_draft_loads_as_written_and_round_trips_on_heliosdb() -> anyhow::Result<()> {
    let server = ferry_tests::helios::HeliosServer::start()?;
    the_draft_loads_as_written_and_round_trips(&server.url(), "heliosdb").await
}

/// Chromium (`scripts/test` installs Debian's `chromium`): a missing browser fails the test.
fn chromium() -> anyhow::Result<std::path::PathBuf> {
    ferry_tests::tools::find_tool(
        "FERRY_CHROMIUM_BIN",
        "chromium/chromium",
        "chromium",
        "scripts/test (apt-get install chromium)",
    )
}

/// Runs headless Chromium on `page` with its own profile in `dir`: `--dump-dom` (the document
/// as parsed), then a 1280×`height` screenshot with a NetLog of every request. Returns the DOM,
/// the screenshot's RGBA pixels and the URLs the *page* asked for (requests with a page
/// initiator; the browser's own background requests have none).
fn render(
    page: &Path,
    dir: &Path,
    height: u32,
) -> anyhow::Result<(String, Vec<[u8; 4]>, Vec<String>)> {
    let browser = chromium()?;
    std::fs::create_dir_all(dir)?;
    let url = format!("file://{}", page.display());
    let common = |profile: &str| {
        let mut command = std::process::Command::new(&browser);
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
        ]);
        command.arg(format!("--user-data-dir={}", dir.join(profile).display()));
        command
    };
    let output = common("dom").arg("--dump-dom").arg(&url).output()?;
    anyhow::ensure!(
        output.status.success(),
        "chromium --dump-dom failed: {output:?}"
    );
    let dom = String::from_utf8(output.stdout)?;
    let shot = dir.join("shot.png");
    let netlog = dir.join("net.json");
    let output = common("shot")
        .arg(format!("--window-size=1280,{height}"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(&url)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "chromium --screenshot failed: {output:?}"
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot)?));
    let mut reader = decoder.read_info()?;
    let mut buffer = vec![0; reader.output_buffer_size().context("screenshot size")?];
    let info = reader.next_frame(&mut buffer)?;
    let channels = info.color_type.samples();
    anyhow::ensure!(info.bit_depth == png::BitDepth::Eight, "{info:?}");
    let pixels = buffer[..info.buffer_size()]
        .chunks(channels)
        .map(|p| match channels {
            3 => [p[0], p[1], p[2], 255],
            _ => [p[0], p[1], p[2], p[3]],
        })
        .collect();
    let log: Value = serde_json::from_slice(&std::fs::read(&netlog)?)?;
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .context("netlog constants")?;
    let fetched = log["events"]
        .as_array()
        .context("netlog events")?
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start_job))
        .filter(|e| e["params"]["initiator"].as_str() != Some("not an origin"))
        .filter_map(|e| e["params"]["url"].as_str())
        .filter(|u| !u.starts_with("file://"))
        .map(str::to_string)
        .collect();
    Ok((dom, pixels, fetched))
}

/// Pixels of exactly `colour` (`#rrggbb`).
fn pixels_of(pixels: &[[u8; 4]], colour: &str) -> usize {
    let hex = |i: usize| u8::from_str_radix(&colour[i..i + 2], 16).unwrap();
    let rgb = [hex(1), hex(3), hex(5)];
    pixels.iter().filter(|p| p[..3] == rgb).count()
}

/// The values of `attribute` on the elements of `class` inside the element of `id` in `dom`.
fn values_in(dom: &str, id: &str, class: &str, attribute: &str) -> Vec<String> {
    let start = dom.find(&format!("id=\"{id}\"")).expect(id);
    let end = start + dom[start..].find("</svg>").expect("the chart's end");
    dom[start..end]
        .split(&format!("class=\"{class}\""))
        .skip(1)
        .map(|element| {
            let from =
                element.find(&format!("{attribute}=\"")).expect(attribute) + attribute.len() + 2;
            element[from..from + element[from..].find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn the_html_report_renders_its_charts_in_a_browser_and_fetches_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shop = generate_shop(31, 3_000, 300);
    let mut export = write_shop_export(dir.path(), &shop, 31, 4)?;
    // Names and values a page must escape, and a URL a careless page would fetch.
    add_data_file(
        &mut export,
        &[
            r#"{"Item":{"PK":{"S":"USER#<b>1"},"SK":{"S":"NOTE#1"},"<script>alert(1)</script>":{"S":"<img src=\"http://127.0.0.1:9/x.png\">"}}}"#.to_string(),
        ],
    )?;
    let page = dir.path().join("report.html");
    let page_arg = page.display().to_string();
    let assessment = assess(
        &export.root,
        &["--full", "--key", "PK,SK", "--html", &page_arg],
    )?;
    let html = std::fs::read_to_string(&page)?;
    assert!(!html.contains("<script"), "a script in the page");
    assert!(!html.contains("<img"), "an image in the page");
    let (dom, pixels, fetched) = render(&page, dir.path(), 5_000)?;
    assert_eq!(fetched, Vec::<String>::new(), "the page fetched");
    assert!(!dom.contains("<script"), "the browser parsed a script");

    // The histogram: one bar per size bucket, with the assessment's counts.
    let buckets: Vec<String> = assessment["sizes"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].to_string())
        .collect();
    assert!(!buckets.is_empty());
    assert_eq!(values_in(&dom, "size-chart", "bar", "data-items"), buckets);
    // The entity chart: the shop's entities, largest first, with their counts.
    let entities: Vec<String> = assessment["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["items"].to_string())
        .collect();
    assert!(entities.len() >= 5, "{entities:?}");
    assert_eq!(
        values_in(&dom, "entity-chart", "bar", "data-items"),
        entities
    );
    // The type mix: one segment per (attribute, type), summing to the items holding it.
    let segments = values_in(&dom, "type-chart", "segment", "data-items");
    let expected: Vec<String> = assessment["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .take(40)
        .flat_map(|a| a["types"].as_array().unwrap().clone())
        .map(|t| t[1].to_string())
        .collect();
    assert_eq!(segments, expected);
    // The draft tables: the shop's five, on both targets.
    for target in ["postgres", "heliosdb"] {
        let start = dom.find(&format!("id=\"draft-{target}\"")).expect(target);
        let tables = dom[start..]
            .split("</div>")
            .next()
            .unwrap()
            .matches("class=\"draft-table\"")
            .count();
        assert!(tables >= 5, "{target}: {tables} draft tables");
    }
    // And the browser drew them: the bar colours cover real areas of the screenshot.
    for (colour, what) in [
        (
            ferry_coordinator::assess::report::SIZE_BAR_COLOUR,
            "the histogram",
        ),
        (
            ferry_coordinator::assess::report::ENTITY_BAR_COLOUR,
            "the entity chart",
        ),
        (
            ferry_coordinator::assess::report::type_colour("S"),
            "the S segments",
        ),
        (
            ferry_coordinator::assess::report::type_colour("N"),
            "the N segments",
        ),
    ] {
        let drawn = pixels_of(&pixels, colour);
        assert!(drawn > 2_000, "{what}: {drawn} pixels of {colour}");
    }

    // Without its Content-Security-Policy the page still asks for nothing; and the check sees a
    // fetch: a page with one image is caught.
    let open = dir.path().join("open.html");
    let meta_start = html.find("<meta http-equiv").unwrap();
    let meta_end = meta_start + html[meta_start..].find('>').unwrap() + 1;
    std::fs::write(
        &open,
        format!("{}{}", &html[..meta_start], &html[meta_end..]),
    )?;
    let (_, _, fetched) = render(&open, &dir.path().join("open"), 800)?;
    assert_eq!(
        fetched,
        Vec::<String>::new(),
        "the page without its policy fetched"
    );
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><p>x</p><img src=\"http://127.0.0.1:9/control.png\">",
    )?;
    let (_, _, fetched) = render(&control, &dir.path().join("control"), 400)?;
    assert_eq!(fetched, vec!["http://127.0.0.1:9/control.png".to_string()]);
    Ok(())
}

//! `ferry-bench`: the spine's benchmark (a command, not a test).
//!
//! Generates an export of N items, starts a private PostgreSQL, and measures in the same run:
//! - the whole `ferry-coordinator migrate` command (gzip JSON in, committed rows out): items/s,
//!   MB/s of compressed and of JSON input, and its peak RSS;
//! - `psql \copy` of the same rows, as CSV written from the loaded table, into an identical table:
//!   the reference, and the ratio Ferry/psql;
//! - the decode stage alone (JSON lines → Arrow) and decode + COPY encoding, single-threaded, in
//!   items/s per core.
//!
//! Build with `--release`; the `ferry-coordinator` binary next to this one is the one measured.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use ferry_tests::gen::{generate_export, GenOptions};
use ferry_tests::harness::binary;
use ferry_tests::pg::PgCluster;
use ferry_worker::decode::{Decoder, RawBlock};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-bench",
    about = "Ferry's end-to-end and decode benchmark against PostgreSQL"
)]
struct Args {
    /// Items to generate.
    #[arg(long, default_value_t = 1_000_000)]
    items: u64,
    /// Data files.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Concurrent shard loaders for ferry (default: the config default, one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Items used for the decode-only measurement.
    #[arg(long, default_value_t = 200_000)]
    decode_items: usize,
    /// Measure the decode stage only (no database).
    #[arg(long)]
    decode_only: bool,
    /// With --decode-only (or --routing): run the scanner (or the router) alone for this many seconds after measuring, so a
    /// profiler (`perf record -g -- ferry-bench --decode-only --profile-secs 10`) sees only it.
    #[arg(long)]
    profile_secs: Option<f64>,
    /// Also measure HeliosDB (heliosdb-nano from the install cache or FERRY_HELIOSDB_BIN).
    #[arg(long)]
    heliosdb: bool,
    /// Measure single-table routing and transforms (the migration guide's config) against plain
    /// decoding of the same lines, one thread, in seconds per million items; no database.
    #[arg(long)]
    routing: bool,
    /// Measure the migration guide's scenario end to end: a shop export of --users users (about
    /// 5 items each) migrated with the guide's config (load and post-load steps), and the same
    /// export in table mode, on each of --targets.
    #[arg(long)]
    guide: bool,
    /// Users of the --guide shop.
    #[arg(long, default_value_t = 60_000)]
    users: usize,
    /// The routed config of --guide (default: deploy/examples/migration-guide.toml).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// The ferry-coordinator measured by --guide (default: the one beside this binary).
    #[arg(long)]
    coordinator: Option<std::path::PathBuf>,
    /// Targets of --guide: postgres, heliosdb.
    #[arg(long, value_delimiter = ',', default_value = "postgres,heliosdb")]
    targets: Vec<String>,
    /// A --guide run taking longer than this is stopped and reported as such.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Catch-up with incremental exports: a boto3-typed history of --users users (about 3 items
    /// each; 35000 gives over 100k items) loaded and caught up through 3 windows on each of
    /// --targets, then the applier's upsert and delete cost per row on the loaded table.
    #[arg(long)]
    catch_up: bool,
    /// Amazon Ion against DynamoDB JSON: --items items decoded from each on one core, then the
    /// whole migrate of each export on each of --targets.
    #[arg(long)]
    ion: bool,
}

fn child_peak_rss_kib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss
}

/// Decode (table mode) vs route + cast + transform (single-table mode) of the same shop lines,
/// single-threaded, each with and without binary COPY encoding.
fn routing_bench(items: usize, profile_secs: Option<f64>) -> anyhow::Result<()> {
    use ferry_tests::shop::generate_shop;
    use ferry_worker::route::Router;
    // About 5 lines per user with the generator's proportions.
    let shop = generate_shop(1, (items / 5).max(10), (items / 20).max(5));
    let lines: Vec<Vec<u8>> = shop.lines(1).into_iter().map(String::into_bytes).collect();
    let blocks: Vec<RawBlock> = lines.chunks(4096).map(RawBlock::of_lines).collect();
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/migration-guide.toml"
    );
    let settings = ferry_shared::config::load_settings(Some(std::path::Path::new(config)))?;
    let keys = vec!["PK".to_string(), "SK".to_string()];
    let router = Router::new(
        &settings.routing,
        &keys,
        Some("2023-11-14T22:13:20.000Z"),
        Default::default(),
    )
    .map_err(anyhow::Error::msg)?;
    let decoder = Decoder::new(Arc::new(infer_for_bench(&lines)?));
    let per_million = |secs: f64| secs * 1e6 / lines.len() as f64;
    // One thread, and inside a rayon pool as a worker's blocks are (each block is a rayon task
    // there): called from outside a pool, the router's per-column `par_iter` would hand every
    // block's columns to another thread and wait, a cost the worker does not have.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    // Best of 3 passes each.
    type Stage<'a> = &'a (dyn Fn(&RawBlock) -> anyhow::Result<usize> + Sync);
    let time = |f: Stage<'_>| -> anyhow::Result<f64> {
        pool.install(|| {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t = Instant::now();
                let mut rows = 0;
                for block in &blocks {
                    rows += f(block)?;
                }
                anyhow::ensure!(rows > 0);
                best = best.min(t.elapsed().as_secs_f64());
            }
            Ok(per_million(best))
        })
    };
    let decode = time(&|b| Ok(decoder.decode(b).batch.num_rows()))?;
    let decode_copy = time(&|b| {
        let decoded = decoder.decode(b);
        let mut out = Vec::new();
        ferry_worker::copy::encode_batch(decoder.schema(), &decoded.batch, None, &mut out)?;
        Ok(decoded.batch.num_rows())
    })?;
    let route = time(&|b| Ok(router.route(b).rows as usize))?;
    let route_copy = time(&|b| {
        let routed = router.route(b);
        let mut out = Vec::new();
        for (table, batch) in router.tables().iter().zip(&routed.batches) {
            ferry_worker::copy::encode_batch(table, batch, None, &mut out)?;
        }
        Ok(routed.rows as usize)
    })?;
    println!(
        "{} shop items ({} tables), one thread, seconds per million items:",
        lines.len(),
        router.tables().len()
    );
    println!("  decode (table mode)                 : {decode:>6.3} s");
    println!("  decode + COPY encode                : {decode_copy:>6.3} s");
    println!("  route + cast + transforms           : {route:>6.3} s");
    println!("  route + transforms + COPY encode    : {route_copy:>6.3} s");
    println!(
        "  routing cost over plain decoding    : {:>+6.3} s ({:.3}x)",
        route - decode,
        route / decode
    );
    let bailed: usize = blocks.iter().map(|b| router.route_counting(b).1).sum();
    println!(
        "  lines given up to the reference     : {bailed} of {}",
        lines.len()
    );
    if let Some(secs) = profile_secs {
        let started = Instant::now();
        let mut rows = 0u64;
        pool.install(|| {
            while started.elapsed().as_secs_f64() < secs {
                for block in &blocks {
                    rows += router.route(block).rows;
                }
            }
        });
        println!(
            "  routing alone for profiling         : {:>6.3} s",
            started.elapsed().as_secs_f64() * 1e6 / rows as f64
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.routing {
        return routing_bench(args.decode_items, args.profile_secs);
    }
    if args.guide {
        return guide_bench(&args);
    }
    if args.catch_up {
        return ferry_tests::bench_catch_up::catch_up_bench(args.users, &args.targets);
    }
    if args.ion {
        return ferry_tests::bench_catch_up::ion_bench(args.items, &args.targets);
    }
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let export = generate_export(
        dir.path(),
        &GenOptions {
            seed: 1,
            items: args.items,
            files: args.files,
            ..GenOptions::default()
        },
    )?;
    let gz_bytes: u64 = export.data_files.iter().map(|f| f.bytes).sum();
    println!(
        "generated {} items in {} files ({:.1} MB gzip) in {:.1} s",
        args.items,
        args.files,
        gz_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // Decode stage alone, one thread: the scanner against the reference parser, same lines.
    let (lines, json_bytes_sample) = read_lines(&export.data_files[0].path, args.decode_items)?;
    let decoder = Decoder::new(Arc::new(infer_for_bench(&lines)?));
    let blocks: Vec<RawBlock> = lines.chunks(4096).map(RawBlock::of_lines).collect();
    let stages = decode_stages(&decoder, &blocks)?;
    let avg_line = json_bytes_sample as f64 / lines.len() as f64;

    if args.decode_only {
        stages.print();
        if let Some(secs) = args.profile_secs {
            let started = Instant::now();
            let mut rows = 0usize;
            while started.elapsed().as_secs_f64() < secs {
                for block in &blocks {
                    rows += decoder.decode(block).batch.num_rows();
                }
            }
            println!(
                "scanner alone for profiling        : {:>10.0} items/s per core",
                rows as f64 / started.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }

    // The whole migrate command.
    let cluster = PgCluster::start()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let url = runtime.block_on(cluster.create_database("bench"))?;
    let mut command = Command::new(binary("ferry-coordinator"));
    command
        .args(["migrate", "--export"])
        .arg(dir.path())
        .args(["--target", &url, "--key", "PK,SK"]);
    if let Some(workers) = args.workers {
        command.args(["--workers", &workers.to_string()]);
    }
    let t = Instant::now();
    let output = command.output()?;
    let ferry_secs = t.elapsed().as_secs_f64();
    let ferry_rss_kib = child_peak_rss_kib();
    if !output.status.success() {
        bail!(
            "migrate failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // The reference: psql \copy of the same rows as CSV into an identical table.
    let psql = cluster.bin_dir().join("psql");
    let csv = dir.path().join("rows.csv");
    let run_psql = |sql: &str| -> anyhow::Result<f64> {
        let t = Instant::now();
        let out = Command::new(&psql)
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()?;
        if !out.status.success() {
            bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(t.elapsed().as_secs_f64())
    };
    run_psql(&format!("\\copy \"AppTable\" TO '{}' CSV", csv.display()))?;
    run_psql("CREATE TABLE reference (LIKE \"AppTable\" INCLUDING ALL)")?;
    let psql_secs = run_psql(&format!("\\copy reference FROM '{}' CSV", csv.display()))?;
    let csv_bytes = std::fs::metadata(&csv)?.len();
    drop(cluster);

    // HeliosDB: Ferry, then psql \copy of the same CSV into a table of the same shape.
    let helios = if args.heliosdb {
        let server = ferry_tests::helios::HeliosServer::start()?;
        let mut command = Command::new(binary("ferry-coordinator"));
        command.args(["migrate", "--export"]).arg(dir.path()).args([
            "--target",
            &server.url(),
            "--key",
            "PK,SK",
        ]);
        let t = Instant::now();
        let output = command.output()?;
        let ferry_helios_secs = t.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "migrate into HeliosDB failed: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let schema_json = runtime.block_on(async {
            let client = ferry_worker::conn::control(&server.url()).await?;
            let run = client
                .query_one("SELECT schema_json FROM ferry.runs LIMIT 1", &[])
                .await?;
            anyhow::Ok(run.get::<_, String>(0))
        })?;
        let mut schema: ferry_shared::schema::TableSchema = serde_json::from_str(&schema_json)?;
        schema.table = "reference".into();
        let ddl = schema.create_table_sql();
        let helios_url = server.url();
        let run_helios_psql = |sql: &str| -> anyhow::Result<f64> {
            let t = Instant::now();
            let out = Command::new(&psql)
                .args([
                    helios_url.as_str(),
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                    "-c",
                    sql,
                ])
                .output()?;
            if !out.status.success() {
                bail!(
                    "psql on HeliosDB {sql}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(t.elapsed().as_secs_f64())
        };
        run_helios_psql(&ddl)?;
        let psql_helios_secs =
            run_helios_psql(&format!("\\copy reference FROM '{}' CSV", csv.display()))?;
        Some((ferry_helios_secs, psql_helios_secs))
    } else {
        None
    };

    let n = args.items as f64;
    let json_total = avg_line * n;
    println!();
    println!("ferry migrate (gzip JSON -> rows) : {:>8.2} s  {:>10.0} items/s  {:>7.1} MB/s gzip  {:>7.1} MB/s JSON", ferry_secs, n / ferry_secs, gz_bytes as f64 / 1e6 / ferry_secs, json_total / 1e6 / ferry_secs);
    println!(
        "psql \\copy of the same rows (CSV) : {:>8.2} s  {:>10.0} items/s  {:>7.1} MB/s CSV",
        psql_secs,
        n / psql_secs,
        csv_bytes as f64 / 1e6 / psql_secs
    );
    println!(
        "ratio ferry / psql (throughput)  : {:>8.2}x",
        psql_secs / ferry_secs
    );
    stages.print();
    if let Some((ferry_helios, psql_helios)) = helios {
        println!(
            "ferry migrate into HeliosDB       : {:>8.2} s  {:>10.0} items/s",
            ferry_helios,
            n / ferry_helios
        );
        println!(
            "psql \\copy of the CSV into HeliosDB: {:>8.2} s  {:>10.0} items/s",
            psql_helios,
            n / psql_helios
        );
        println!(
            "ratio ferry / psql on HeliosDB    : {:>8.2}x",
            psql_helios / ferry_helios
        );
        println!(
            "ratio HeliosDB / PostgreSQL (ferry): {:>7.2}x",
            ferry_secs / ferry_helios
        );
    }
    println!(
        "ferry-coordinator peak RSS        : {:>8.1} MiB",
        ferry_rss_kib as f64 / 1024.0
    );
    println!(
        "average JSON line                 : {:>8.0} bytes",
        avg_line
    );
    Ok(())
}

/// Items/s per core of the decode stage (scanner, and the reference parser it replaced) and of
/// decode + binary COPY encoding, measured on the same blocks in turns (best of 3 rounds each).
struct DecodeStages {
    rows: usize,
    scan: f64,
    reference: f64,
    scan_copy: f64,
    reference_copy: f64,
    bytes_per_item: f64,
    bailed: usize,
}

fn decode_stages(decoder: &Decoder, blocks: &[RawBlock]) -> anyhow::Result<DecodeStages> {
    let rows: usize = blocks.iter().map(|b| b.lines.len()).sum();
    let mut best = [f64::INFINITY; 4];
    let mut encoded = 0usize;
    let mut bailed = 0usize;
    for round in 0..3 {
        for (stage, slot) in best.iter_mut().enumerate() {
            let t = Instant::now();
            let mut decoded_rows = 0;
            let mut bytes = 0;
            for block in blocks {
                let decoded = if stage % 2 == 0 {
                    let (decoded, gave_up) = decoder.decode_counting(block);
                    if round == 0 {
                        bailed += gave_up;
                    }
                    decoded
                } else {
                    decoder.decode_reference(block)
                };
                decoded_rows += decoded.batch.num_rows();
                if stage >= 2 {
                    let mut out = Vec::new();
                    ferry_worker::copy::encode_batch(
                        decoder.schema(),
                        &decoded.batch,
                        None,
                        &mut out,
                    )?;
                    bytes += out.len();
                }
            }
            anyhow::ensure!(decoded_rows > 0, "nothing decoded");
            *slot = slot.min(t.elapsed().as_secs_f64());
            if stage >= 2 {
                encoded = bytes;
            }
        }
    }
    let rate = |secs: f64| rows as f64 / secs;
    Ok(DecodeStages {
        rows,
        scan: rate(best[0]),
        reference: rate(best[1]),
        scan_copy: rate(best[2]),
        reference_copy: rate(best[3]),
        bytes_per_item: encoded as f64 / rows as f64,
        bailed,
    })
}

impl DecodeStages {
    fn print(&self) {
        println!(
            "decode only, 1 thread             : {:>10.0} items/s per core (reference parser {:.0}: {:.2}x)",
            self.scan,
            self.reference,
            self.scan / self.reference
        );
        println!(
            "decode + COPY encode, 1 thread    : {:>10.0} items/s per core (reference parser {:.0}: {:.2}x; {:.0} bytes of COPY per item)",
            self.scan_copy,
            self.reference_copy,
            self.scan_copy / self.reference_copy,
            self.bytes_per_item
        );
        println!(
            "lines given up to the reference   : {:>10} of {}",
            self.bailed, self.rows
        );
    }
}

fn read_lines(path: &std::path::Path, max: usize) -> anyhow::Result<(Vec<Vec<u8>>, usize)> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let mut lines = Vec::new();
    let mut bytes = 0;
    for line in reader.split(b'\n').take(max) {
        let line = line?;
        bytes += line.len() + 1;
        lines.push(line);
    }
    Ok((lines, bytes))
}

fn infer_for_bench(lines: &[Vec<u8>]) -> anyhow::Result<ferry_shared::schema::TableSchema> {
    let mut stats = ferry_coordinator::infer::SampleStats::default();
    for line in lines.iter().take(10_000) {
        stats.add_line(line);
    }
    let settings = ferry_shared::config::Settings::default();
    let keys = ferry_shared::config::KeyAttribute::parse_list("PK,SK")?;
    Ok(ferry_coordinator::infer::infer_schema(
        "AppTable",
        &keys,
        &settings.mapping,
        &stats,
        ferry_shared::schema::NumericLimit::Unlimited,
        ferry_shared::ident::ColumnNames::Any,
    )?)
}

/// Runs `command` to its end or until `timeout`; `None` on a timeout (the child is killed).
fn run_with_timeout(
    command: &mut Command,
    timeout: std::time::Duration,
) -> anyhow::Result<Option<std::process::Output>> {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    // Read both pipes on threads so a large report cannot block the child.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(std::process::Output {
                status,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
            }));
        }
        if started.elapsed() > timeout {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The migration guide's scenario end to end (see `--guide`).
fn guide_bench(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shop = ferry_tests::shop::generate_shop(3, args.users, (args.users / 10).max(1));
    let export = ferry_tests::shop::write_shop_export(dir.path(), &shop, 3, 8)?;
    let items = export.total_items;
    let config = args.config.clone().unwrap_or_else(|| {
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/migration-guide.toml"
        ))
    });
    let coordinator = args
        .coordinator
        .clone()
        .unwrap_or_else(|| binary("ferry-coordinator"));
    println!(
        "guide shop: {items} items ({} users), config {}, binary {}",
        args.users,
        config.display(),
        coordinator.display()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let timeout = std::time::Duration::from_secs(args.timeout_secs);
    for target in &args.targets {
        for routed in [false, true] {
            // A fresh server (or database) per run.
            let mut _cluster = None;
            let mut _server = None;
            let url = match target.as_str() {
                "postgres" => {
                    let cluster = PgCluster::start()?;
                    let url = runtime.block_on(cluster.create_database("guide"))?;
                    _cluster = Some(cluster);
                    url
                }
                "heliosdb" => {
                    let server = ferry_tests::helios::HeliosServer::start()?;
                    let url = server.url();
                    _server = Some(server);
                    url
                }
                other => bail!("unknown target {other}"),
            };
            let mut command = Command::new(&coordinator);
            command
                .args(["migrate", "--export"])
                .arg(dir.path())
                .args(["--target", &url, "--key", "PK,SK", "--json"]);
            if routed {
                command.arg("--config").arg(&config);
            } else {
                command.args(["--table", "items"]);
            }
            let t = Instant::now();
            let output = run_with_timeout(&mut command, timeout)?;
            let wall = t.elapsed().as_secs_f64();
            let mode = if routed {
                "routed (guide config)"
            } else {
                "table mode"
            };
            let Some(output) = output else {
                println!(
                    "{target:<9} {mode:<22}: stopped after {wall:.0} s (no result within --timeout-secs)"
                );
                continue;
            };
            let report: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
            let load = report["elapsed_seconds"].as_f64().unwrap_or(f64::NAN);
            let post_load: f64 = report["post_load"]
                .as_array()
                .map(|lines| lines.iter().filter_map(|l| l["seconds"].as_f64()).sum())
                .unwrap_or(f64::NAN);
            let verify: f64 = report["verification"]
                .as_array()
                .map(|checks| checks.iter().filter_map(|c| c["seconds"].as_f64()).sum())
                .unwrap_or(0.0)
                + 0.0; // an empty sum of f64 is -0.0
                       // What is left once the user's own SQL after the load (post-load steps, verification
                       // queries) is taken out: Ferry's part of the whole run.
            let ferry_part = wall - post_load - verify;
            println!(
                "{target:<9} {mode:<22}: exit {:?}, whole run {wall:>7.1} s ({:>7.0} items/s), load {load:>6.1} s ({:>7.0} items/s), post-load {post_load:>6.1} s, verify {verify:>5.1} s, whole run without those {ferry_part:>6.1} s",
                output.status.code(),
                items as f64 / wall,
                items as f64 / load,
            );
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                println!("  {}", tail.join(" | "));
            }
        }
    }
    Ok(())
}

//! `ferry-bench-decode`: Ferry's decode stage over every data file of an export, as `scripts/bench`
//! compares it with DuckDB's `read_json` of the same files.
//!
//! What is timed, from start to end: the schema inferred from a sample of the files (as `plan`
//! does: the first `mapping.sample_items` items spread over the files), then every data file read
//! the way a worker reads it (gunzip, lines framed into blocks) and each block decoded into an
//! Arrow batch, on `--threads` threads taking whole files (as DuckDB's threads do). The batches
//! are dropped once decoded (a worker streams them into COPY); no database is involved. Prints one
//! JSON object: items, rejects, seconds (total and the inference alone), items/s, threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use ferry_shared::config::{KeyAttribute, Settings};
use ferry_shared::schema::NumericLimit;
use ferry_worker::decode::Decoder;
use ferry_worker::source::{read_source, sample_lines, SourceSpec, MAX_SAMPLE_BYTES};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-bench-decode",
    about = "Ferry's decode stage (gzip DynamoDB JSON -> Arrow batches) over every data file of an export"
)]
struct Args {
    /// The export folder (…/AWSDynamoDB/<ExportId>/, holding manifest-files.json).
    #[arg(long)]
    export: PathBuf,
    /// Key attributes, as `migrate --key` takes them.
    #[arg(long)]
    key: String,
    /// Threads decoding files at once (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// The data files the manifest lists, as local paths, with their item counts.
fn data_files(export: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let manifest = export.join("manifest-files.json");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    // Keys run from the bucket root: <prefix>/AWSDynamoDB/<ExportId>/data/<name>; the local copy
    // keeps everything from AWSDynamoDB/ on.
    let awsdynamodb = export
        .parent()
        .with_context(|| format!("{} has no parent folder", export.display()))?;
    let mut files = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let entry: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", manifest.display(), n + 1))?;
        let key = entry["dataFileS3Key"]
            .as_str()
            .with_context(|| format!("{} line {}: no dataFileS3Key", manifest.display(), n + 1))?;
        let items = entry["itemCount"].as_u64().unwrap_or(0);
        let relative = match key.find("AWSDynamoDB/") {
            Some(at) => &key[at + "AWSDynamoDB/".len()..],
            None => bail!(
                "{}: key {key} is not under AWSDynamoDB/",
                manifest.display()
            ),
        };
        files.push((awsdynamodb.join(relative), items));
    }
    if files.is_empty() {
        bail!("{} lists no data files", manifest.display());
    }
    Ok(files)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = data_files(&args.export)?;
    let expected: u64 = files.iter().map(|(_, items)| items).sum();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let settings = Settings::default();
    let keys = KeyAttribute::parse_list(&args.key)?;

    let started = Instant::now();
    // The plan's sample: mapping.sample_items spread over the non-empty files.
    let sampled: Vec<&PathBuf> = files
        .iter()
        .filter(|(path, items)| *items > 0 && std::fs::metadata(path).is_ok_and(|m| m.len() > 0))
        .map(|(path, _)| path)
        .take(64)
        .collect();
    let per_file = settings
        .mapping
        .sample_items
        .div_ceil(sampled.len().max(1))
        .max(1);
    let mut stats = ferry_coordinator::infer::SampleStats::default();
    for path in &sampled {
        let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
        let lines = sample_lines(
            file,
            &path.display().to_string(),
            per_file,
            MAX_SAMPLE_BYTES,
        )?;
        for line in &lines {
            stats.add_line(line);
        }
    }
    let schema = ferry_coordinator::infer::infer_schema(
        "bench",
        &keys,
        &settings.mapping,
        &stats,
        NumericLimit::Unlimited,
        ferry_shared::ident::ColumnNames::Any,
    )?;
    let columns = schema.columns.len();
    let decoder = Arc::new(Decoder::new(Arc::new(schema)));
    let inferred = started.elapsed().as_secs_f64();

    let next = Arc::new(AtomicUsize::new(0));
    let files = Arc::new(files);
    let block_lines = settings.load.block_lines.get();
    let chunk_lines = settings.load.chunk_lines.get();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, files, decoder) = (next.clone(), files.clone(), decoder.clone());
            std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
                let (mut rows, mut rejects) = (0u64, 0u64);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, _)) = files.get(index) else {
                        return Ok((rows, rejects));
                    };
                    let file =
                        std::fs::File::open(path).with_context(|| path.display().to_string())?;
                    let spec = SourceSpec {
                        location: path.display().to_string(),
                        skip_lines: 0,
                        chunk_lines,
                        block_lines,
                        block_bytes: 8 * 1024 * 1024,
                    };
                    read_source(file, &spec, None, |framed| {
                        let decoded = decoder.decode(&framed.block);
                        rows += decoded.batch.num_rows() as u64;
                        rejects += decoded.rejects.len() as u64;
                        Ok(())
                    })?;
                }
            })
        })
        .collect();
    let (mut rows, mut rejects) = (0u64, 0u64);
    for worker in workers {
        let (r, j) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a decode thread panicked"))??;
        rows += r;
        rejects += j;
    }
    let seconds = started.elapsed().as_secs_f64();
    if rows + rejects != expected {
        bail!("decoded {rows} rows and {rejects} rejects, the manifest lists {expected} items");
    }
    println!(
        "{}",
        serde_json::json!({
            "items": rows,
            "rejects": rejects,
            "seconds": seconds,
            "infer_seconds": inferred,
            "items_per_second": rows as f64 / seconds,
            "threads": threads,
            "typed_columns": columns,
        })
    );
    Ok(())
}

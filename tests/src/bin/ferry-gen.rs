//! `ferry-gen`: writes a deterministic synthetic DynamoDB export folder (see `ferry_tests::gen`)
//! for manual runs and benchmarks.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ferry_tests::gen::{generate_export, ChecksumExt, GenOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ChecksumArg {
    Md5,
    Checksum,
}

/// Generate a synthetic DynamoDB "export to S3" folder.
#[derive(Debug, Parser)]
#[command(name = "ferry-gen", version)]
struct Args {
    /// Bucket root folder to write into (created if missing)
    #[arg(long)]
    out: PathBuf,
    /// Total number of items
    #[arg(long, default_value_t = 100_000)]
    items: u64,
    /// Number of data files the items are spread over
    #[arg(long, default_value_t = 4)]
    files: usize,
    /// PRNG seed (same seed, same bytes)
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Table name used in the ARNs
    #[arg(long, default_value = "AppTable")]
    table: String,
    /// S3 prefix above AWSDynamoDB/ (empty string for none)
    #[arg(long, default_value = "exports/app")]
    prefix: String,
    /// Write only data files: no manifests, no _started
    #[arg(long)]
    no_manifest: bool,
    /// Extension of the manifest checksum files
    #[arg(long, value_enum, default_value = "md5")]
    checksum_ext: ChecksumArg,
    /// Leave out the `EDGE#<k>` edge-case items
    #[arg(long)]
    no_edge_cases: bool,
    /// Write the migration guide's single-table shop instead (about 5 items per user, one product
    /// per 10 users), for `deploy/examples/migration-guide.toml`; --items is then the number of
    /// users
    #[arg(long)]
    shop: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = GenOptions {
        seed: args.seed,
        items: args.items,
        files: args.files,
        table_name: args.table,
        s3_prefix: Some(args.prefix).filter(|p| !p.is_empty()),
        checksum_ext: match args.checksum_ext {
            ChecksumArg::Md5 => ChecksumExt::Md5,
            ChecksumArg::Checksum => ChecksumExt::Checksum,
        },
        write_manifest: !args.no_manifest,
        edge_cases: !args.no_edge_cases,
        ..GenOptions::default()
    };
    std::fs::create_dir_all(&args.out)?;
    let started = std::time::Instant::now();
    let export = if args.shop {
        let users = args.items as usize;
        let shop = ferry_tests::shop::generate_shop(args.seed, users, (users / 10).max(1));
        ferry_tests::shop::write_shop_export(&args.out, &shop, args.seed, args.files)?
    } else {
        generate_export(&args.out, &opts)?
    };
    let bytes: u64 = export.data_files.iter().map(|f| f.bytes).sum();
    println!("export dir: {}", export.export_dir.display());
    println!("items: {}", export.total_items);
    println!("data files: {}", export.data_files.len());
    println!("compressed bytes: {bytes}");
    println!("elapsed: {:.2}s", started.elapsed().as_secs_f64());
    Ok(())
}

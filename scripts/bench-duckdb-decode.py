#!/usr/bin/env python3
"""DuckDB's decode of a DynamoDB export's data files, the reference scripts/bench sets beside
Ferry's decode stage (target/release/ferry-bench-decode).

Reads every data file the manifest lists (gzip JSON lines) into an in-memory DuckDB table with
`CREATE TABLE items AS SELECT * FROM read_json([...], format = 'newline_delimited')`, DuckDB
inferring the columns itself (nested STRUCTs and LISTs for the typed DynamoDB JSON), on --threads
threads, and checks the row count against the manifest's.

usage: bench-duckdb-decode.py --export DIR [--threads N]
Prints one JSON line: {"items": ..., "seconds": ...} (seconds of the CREATE TABLE alone).
"""

import argparse
import json
import os
import sys
import time

import duckdb


def data_files(export_dir):
    awsdynamodb = os.path.dirname(os.path.abspath(export_dir))
    files, expected = [], 0
    with open(os.path.join(export_dir, "manifest-files.json")) as f:
        for line in f:
            if not line.strip():
                continue
            entry = json.loads(line)
            key = entry["dataFileS3Key"]
            expected += entry["itemCount"]
            path = os.path.join(awsdynamodb, key[key.index("AWSDynamoDB/") + len("AWSDynamoDB/"):])
            # DuckDB reads an empty gzip member as no rows, but a 0-byte object is no gzip at all.
            if os.path.getsize(path) > 0:
                files.append(path)
    return files, expected


def main():
    parser = argparse.ArgumentParser(description="DuckDB read_json of an export's data files")
    parser.add_argument("--export", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    files, expected = data_files(args.export)
    con = duckdb.connect(":memory:")
    con.execute("SET threads = $1", [args.threads])
    started = time.monotonic()
    con.execute(
        "CREATE TABLE items AS SELECT * FROM read_json($1, format = 'newline_delimited', compression = 'gzip')",
        [files],
    )
    seconds = time.monotonic() - started
    (rows,) = con.execute("SELECT count(*) FROM items").fetchone()
    if rows != expected:
        sys.exit(f"duckdb read {rows} rows, the manifest lists {expected} items")
    print(json.dumps({"items": rows, "seconds": seconds, "threads": args.threads, "duckdb": duckdb.__version__}))


if __name__ == "__main__":
    main()

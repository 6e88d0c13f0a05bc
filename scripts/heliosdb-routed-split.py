#!/usr/bin/env python3
"""Where does HeliosDB's time go when it loads the migration guide's five routed tables?
A hand-run measurement for issue 25 (routed loads against table mode), no Ferry in the timed part.

1. Writes the guide's shop export (`ferry-gen --shop --items USERS`), loads it once routed
   (deploy/examples/migration-guide.toml) and once in table mode (`--table items`) with
   `ferry-coordinator migrate`, each into its own fresh `heliosdb-nano`, and dumps every loaded
   table to CSV with `psql \\copy ... TO` (so the rows are exactly the ones Ferry wrote, with
   their `_ferry_chunk`).
2. For each variant of the tables' DDL (the guide's setup as it is; without its CHECKs; without
   the source-identity UNIQUE (dynamo_pk, dynamo_sk); without users' UNIQUE (email); primary
   keys only; no constraint at all), starts a fresh server, creates the five tables and times
   `psql \\copy ... FROM` of each table's CSV, one after the other. The table-mode dump is loaded
   the same way into its own table (its primary key (PK, SK), as Ferry creates it).

Every variant is repeated (--reps, default 3) and the median per table is printed, with the
rows/s and the sum over the five tables against table mode's time for its (more) rows.

usage: heliosdb-routed-split.py --bin DIR [--users 60000] [--reps 3]
       (DIR holds ferry-gen and ferry-coordinator, e.g. target/release)
About 5 minutes on 2 cores at 60,000 users.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

from heliosdb_local import free_port, heliosdb_binary
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "deploy", "examples", "migration-guide.toml")
TABLES = ["users", "orders", "sessions", "products", "reviews"]


class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="heliosdb-routed-split-")
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [heliosdb_binary(), "start", "--listen", "127.0.0.1", "--port", str(self.port),
             "--auth", "trust", "--http-port", "0", "--data-dir", os.path.join(self.dir, "data")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )
        deadline = time.time() + 60
        while subprocess.run(self.psql_args("SELECT 1"), capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"heliosdb-nano did not start; see {self.dir}/server.log")
            time.sleep(0.2)

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def psql_args(self, command):
        return ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                str(self.port), "-U", "postgres", "-d", "postgres", "-c", command]

    def psql(self, command):
        done = subprocess.run(self.psql_args(command), capture_output=True, text=True)
        if done.returncode != 0 or "ERROR" in done.stderr:
            raise RuntimeError(f"psql failed on {command[:80]!r}: {done.stderr.strip()}")
        return done.stdout

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def setup_statements(only_on="heliosdb"):
    """The guide's [[setup]] SQL, in order, for one target (a small reader of that file's form:
    `[[setup]]`, `sql = \"\"\"...\"\"\"` or `sql = "..."`, an optional `only_on`)."""
    text = open(GUIDE, encoding="utf-8").read()
    out = []
    for block in text.split("[[setup]]")[1:]:
        block = block.split("\n[[")[0]
        m = re.search(r'sql = """(.*?)"""', block, re.S) or re.search(r'sql = "(.*?)"\n', block)
        on = re.search(r'only_on = "(\w+)"', block)
        if on and on.group(1) != only_on:
            continue
        out.append(m.group(1).strip())
    return out


def without(sql, pattern):
    """The DDL with a constraint clause (a regex over one line's text) removed."""
    lines = sql.split("\n")
    kept = [l for l in lines if not re.search(pattern, l)]
    text = "\n".join(kept)
    return re.sub(r",\s*\n\)", "\n)", text)  # a trailing comma left before ')'


def strip_checks(sql):
    sql = re.sub(r"\s*CHECK \(status IN \([^)]*\)\)", "", sql, flags=re.S)
    return re.sub(r"\s*CHECK \(rating BETWEEN 1 AND 5\)", "", sql)


# The sessions table is Ferry's own (no [[setup]]): its columns as Ferry creates it.
SESSIONS = """CREATE TABLE sessions (dynamo_pk TEXT NOT NULL, dynamo_sk TEXT NOT NULL,
 user_id INT4, expires_at TIMESTAMPTZ, data JSONB{unique})"""

VARIANTS = {
    "guide setup as is": lambda s: s,
    "without the CHECKs": strip_checks,
    "without UNIQUE (dynamo_pk, dynamo_sk)": lambda s: without(s, r"^\s*UNIQUE \(dynamo_pk, dynamo_sk\)"),
    "without users' UNIQUE (email)": lambda s: s.replace("email TEXT UNIQUE NOT NULL", "email TEXT NOT NULL"),
    "primary keys only": lambda s: without(
        strip_checks(s.replace("email TEXT UNIQUE NOT NULL", "email TEXT NOT NULL")),
        r"^\s*UNIQUE \(dynamo_pk, dynamo_sk\)"),
    "no constraint": lambda s: without(
        strip_checks(s.replace("email TEXT UNIQUE NOT NULL", "email TEXT NOT NULL")),
        r"^\s*UNIQUE \(dynamo_pk, dynamo_sk\)").replace(" PRIMARY KEY", ""),
}


def dump(server, tables, folder):
    for table in tables:
        server.psql(f"\\copy {table} TO '{folder}/{table}.csv' CSV")


def migrate(bin_dir, export, server, routed):
    args = [os.path.join(bin_dir, "ferry-coordinator"), "migrate", "--export", export,
            "--target", server.url(), "--key", "PK,SK", "--json"]
    args += ["--config", GUIDE] if routed else ["--table", "items"]
    done = subprocess.run(args, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed: {done.stderr.decode()[-2000:]}")


def timed_copy(server, table, path):
    t = time.perf_counter()
    server.psql(f"\\copy {table} FROM '{path}' CSV")
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="folder with ferry-gen and ferry-coordinator")
    parser.add_argument("--users", type=int, default=60000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="routed-split-")
    export_root = os.path.join(work, "export")
    subprocess.run([os.path.join(args.bin, "ferry-gen"), "--out", export_root, "--shop",
                    "--items", str(args.users), "--files", "8", "--prefix", ""],
                   check=True, capture_output=True)
    export = os.path.join(export_root, "exports", "app")  # ferry-gen's layout with --prefix ""
    if not os.path.isdir(export):
        export = export_root

    # The rows exactly as Ferry loads them, routed and in table mode.
    server = Server()
    migrate(args.bin, export, server, routed=True)
    dump(server, TABLES, work)
    server.stop()
    server = Server()
    migrate(args.bin, export, server, routed=False)
    dump(server, ["items"], work)
    columns = server.psql(
        "SELECT column_name || ' ' || data_type FROM information_schema.columns "
        "WHERE table_name = 'items' ORDER BY ordinal_position").split("\n")
    server.stop()
    columns = [c.strip() for c in columns if c.strip()]
    items_sql = ("CREATE TABLE items (" + ", ".join(f'"{c.split(" ", 1)[0]}" {c.split(" ", 1)[1]}' for c in columns)
                 + ', PRIMARY KEY ("PK", "SK"))')
    rows = {t: sum(1 for _ in open(os.path.join(work, f"{t}.csv"), "rb")) for t in TABLES + ["items"]}
    print(f"shop of {args.users} users: routed rows {sum(rows[t] for t in TABLES)} "
          f"({', '.join(f'{t} {rows[t]}' for t in TABLES)}), table mode rows {rows['items']}")

    # Table mode: the reference.
    reference = []
    for _ in range(args.reps):
        server = Server()
        server.psql(items_sql)
        reference.append(timed_copy(server, "items", os.path.join(work, "items.csv")))
        server.stop()
    ref = statistics.median(reference)
    print(f"{'table mode (items, PRIMARY KEY (PK, SK))':<42} {ref:6.2f} s "
          f"({rows['items'] / ref:8.0f} rows/s)")

    base = setup_statements()
    for name, change in VARIANTS.items():
        per_table = {t: [] for t in TABLES}
        for _ in range(args.reps):
            server = Server()
            for sql in base:
                server.psql(change(sql).replace("CREATE TABLE IF NOT EXISTS", "CREATE TABLE"))
            unique = ", UNIQUE (dynamo_pk, dynamo_sk)" if "dynamo_pk" in name or name == "guide setup as is" \
                or name in ("without the CHECKs", "without users' UNIQUE (email)") else ""
            server.psql(SESSIONS.format(unique=unique))
            for t in TABLES:
                server.psql(f"ALTER TABLE {t} ADD COLUMN _ferry_chunk BIGINT")
            for t in TABLES:
                per_table[t].append(timed_copy(server, t, os.path.join(work, f"{t}.csv")))
            server.stop()
        medians = {t: statistics.median(v) for t, v in per_table.items()}
        total = sum(medians.values())
        detail = ", ".join(f"{t} {medians[t]:.2f}" for t in TABLES)
        print(f"{name:<42} {total:6.2f} s ({sum(rows[t] for t in TABLES) / total:8.0f} rows/s; "
              f"table mode ÷ this {ref / total:4.2f}) [{detail}]")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

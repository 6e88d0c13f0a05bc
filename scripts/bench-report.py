#!/usr/bin/env python3
"""Turns scripts/bench's raw measurements (raw.tsv) and its notes on the run (meta.txt) into the
markdown tables of BENCHMARKS.md, printed on stdout.

Every value is the median over the runs; a ratio is the median of the runs' own ratios (each
taken from measurements of the same run), and the last table lists every run.

usage: bench-report.py RAW_TSV META_TXT
"""

import csv
import json
import os
import statistics
import sys
from collections import defaultdict

GOALS = {"postgres": 1.3, "heliosdb": 1.0}
TARGET_NAMES = {"postgres": "PostgreSQL", "heliosdb": "HeliosDB"}
EXPORT_NAMES = {"generator": "generator (`ferry-gen`)", "aws": "AWS-shaped (boto3)", "aws-ion": "AWS-shaped (boto3), as Ion", "-": "generator, one file (`ferry-bench`)"}


def duration(seconds):
    seconds = int(seconds or 0)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def main():
    raw_path, meta_path = sys.argv[1], sys.argv[2]
    meta = {}
    with open(meta_path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    # (export, target, build, measure) -> {run: (seconds, items, rss_kib)}
    data = defaultdict(dict)
    with open(raw_path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rss = int(row["peak_rss_kib"]) if row["peak_rss_kib"] else None
            # CPU seconds of the whole machine during the measurement, and Ferry's own share
            # (absent from raw.tsv files written before the bench measured them).
            cpu = float(row["cpu_seconds"]) if row.get("cpu_seconds") else None
            own = float(row["own_cpu_seconds"]) if row.get("own_cpu_seconds") else None
            data[(row["export"], row["target"], row["build"], row["measure"])][int(row["run"])] = (
                float(row["seconds"]),
                int(row["items"]),
                rss,
                cpu,
                own,
            )
    exports = list(dict.fromkeys(k[0] for k in data if k[0] != "-"))
    targets = list(dict.fromkeys(k[1] for k in data if k[1] != "-"))
    has_before = any(k[2] == "before" for k in data)
    before = meta.get("before") or "before"
    runs = sorted({r for v in data.values() for r in v})

    def runs_of(export, target, build, measure):
        return data.get((export, target, build, measure), {})

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def secs(export, target, build, measure):
        return median([v[0] for v in runs_of(export, target, build, measure).values()])

    def rate(export, target, build, measure):
        return median([v[1] / v[0] for v in runs_of(export, target, build, measure).values()])

    def rss_mib(export, target, build):
        return median([v[2] / 1024 if v[2] else None for v in runs_of(export, target, build, "ferry_migrate").values()])

    def cpu(export, target, build, measure, field=3):
        """Median CPU seconds: the machine's (field 3) or Ferry's own (field 4)."""
        return median([v[field] for v in runs_of(export, target, build, measure).values()])

    def server_cpu(export, target, build):
        """Median of the machine's CPU seconds less Ferry's own, per run: the database server's."""
        values = runs_of(export, target, build, "ferry_migrate").values()
        return median([v[3] - v[4] if v[3] is not None and v[4] is not None else None for v in values])

    def ceiling(export, target):
        """Median per run of psql \\copy s ÷ (Ferry's machine CPU s ÷ cores): the most psql ÷ Ferry
        the machine's cores allow a migrate using that much CPU (every core busy all along)."""
        cores = int(meta.get("cores") or 0)
        a, b = runs_of(export, target, "after", "ferry_migrate"), runs_of(export, target, "reference", "psql_copy")
        values = [b[r][0] / (a[r][3] / cores) for r in runs if r in a and r in b and a[r][3] and cores]
        return median(values)

    def ratio(num, den, inverse=False):
        """Median of per-run ratios num/den of seconds (den/num with inverse)."""
        a, b = runs_of(*num), runs_of(*den)
        values = [(b[r][0] / a[r][0]) if inverse else (a[r][0] / b[r][0]) for r in runs if r in a and r in b]
        return median(values)

    def rate_ratio(num, den):
        """Median of per-run ratios of items/s."""
        a, b = runs_of(*num), runs_of(*den)
        values = [(a[r][1] / a[r][0]) / (b[r][1] / b[r][0]) for r in runs if r in a and r in b]
        return median(values)

    f = lambda v, fmt="{:.2f}": "–" if v is None else fmt.format(v)
    n = lambda v: "–" if v is None else f"{v:,.0f}"
    x = lambda v: "–" if v is None else f"{v:.2f}×"

    out = []
    p = out.append
    p(f"Measured {meta.get('date', '?')} by `scripts/bench` on Ferry {meta.get('after', '?')}"
      + (f" (before: {before})" if has_before else "")
      + f": {int(meta.get('items', 0)):,} items per export, "
      + (f"{meta.get('runs')} runs of every measurement, medians." if meta.get("runs") != "1" else "one run of every measurement.")
      + f" Machine: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, {meta.get('memory', '?')};"
      + f" PostgreSQL {meta.get('postgres', '?')}" + (f", HeliosDB {meta['heliosdb']}" if meta.get("heliosdb") else "")
      + f"; {meta.get('python', '')}. The whole bench took {duration(meta.get('elapsed'))}"
      + f" (building {duration(meta.get('build_secs'))}, writing the exports {duration(meta.get('exports_secs'))}).")
    p("")
    p("| export | items | data files | gzip MB | JSON MB |")
    p("|---|---:|---:|---:|---:|")
    for e in exports:
        parts = meta.get(f"export.{e}", "").split()
        if len(parts) == 4:
            p(f"| {EXPORT_NAMES.get(e, e)} | {int(parts[0]):,} | {parts[1]} | {int(parts[2]) / 1e6:.1f} | {int(parts[3]) / 1e6:.1f} |")
    p("")

    p("**End to end:** the whole `ferry-coordinator migrate` (plan, load, finalize; wall time of the process) "
      "against `psql \\copy` of the same rows (CSV) into an identical empty table, same export, same database, same run. "
      "psql ÷ Ferry > 1 means Ferry is faster. On PostgreSQL a second reference is `psql \\copy` followed by "
      "`ANALYZE`, which PostgreSQL's docs advise after a bulk load and Ferry's finalize runs: the same end state.")
    p("")
    head = ("| export | target | Ferry s | Ferry items/s | psql \\copy s | psql ÷ Ferry | goal "
            "| psql \\copy + ANALYZE s | (psql + ANALYZE) ÷ Ferry | Ferry peak RSS MiB |")
    rule = "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"
    if has_before:
        head += f" before ({before}) s | psql ÷ before | before peak RSS MiB |"
        rule += "---:|---:|---:|"
    p(head)
    p(rule)
    for e in exports:
        for t in targets:
            if not runs_of(e, t, "after", "ferry_migrate"):
                continue
            r = ratio((e, t, "reference", "psql_copy"), (e, t, "after", "ferry_migrate"))
            goal = GOALS.get(t)
            mark = "" if r is None or goal is None else (f"≥ {goal:.1f}× " + ("met" if r >= goal else "**not met**"))
            line = (f"| {EXPORT_NAMES.get(e, e)} | {TARGET_NAMES.get(t, t)} | {f(secs(e, t, 'after', 'ferry_migrate'))} "
                    f"| {n(rate(e, t, 'after', 'ferry_migrate'))} | {f(secs(e, t, 'reference', 'psql_copy'))} | {x(r)} | {mark} "
                    f"| {f(secs(e, t, 'reference', 'psql_copy_analyze'))} "
                    f"| {x(ratio((e, t, 'reference', 'psql_copy_analyze'), (e, t, 'after', 'ferry_migrate')))} "
                    f"| {f(rss_mib(e, t, 'after'), '{:.0f}')} |")
            if has_before:
                rb = ratio((e, t, "reference", "psql_copy"), (e, t, "before", "ferry_migrate"))
                line += (f" {f(secs(e, t, 'before', 'ferry_migrate'))} | {x(rb)} | {f(rss_mib(e, t, 'before'), '{:.0f}')} |")
            p(line)
    p("")

    if any(cpu(e, t, "after", "ferry_migrate") is not None for e in exports for t in targets):
        cores = meta.get("cores", "?")
        p("**Where the CPU goes:** CPU seconds the whole machine spent during each measurement (`/proc/stat`: user, "
          "system and interrupt time; not idle, I/O wait or steal). Ferry's own is its process's user + system time "
          "(`/usr/bin/time`); the rest of a migrate's CPU is the database server's. A run that needs C CPU seconds "
          f"cannot take less than C ÷ {cores} seconds on this machine's {cores} cores, so the last column is the most "
          "psql ÷ Ferry the machine allows: `psql \\copy` s ÷ (Ferry's CPU s ÷ cores), as if every core were busy "
          "from start to end.")
        p("")
        p("| export | target | Ferry migrate: CPU s | Ferry's own | server | `psql \\copy`: CPU s | Ferry's CPU ÷ psql's "
          "| psql ÷ Ferry | at most, on these cores |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for e in exports:
            for t in targets:
                if cpu(e, t, "after", "ferry_migrate") is None:
                    continue
                a, b = runs_of(e, t, "after", "ferry_migrate"), runs_of(e, t, "reference", "psql_copy")
                cpu_ratio = median([a[r][3] / b[r][3] for r in runs if r in a and r in b and a[r][3] and b[r][3]])
                p(f"| {EXPORT_NAMES.get(e, e)} | {TARGET_NAMES.get(t, t)} | {f(cpu(e, t, 'after', 'ferry_migrate'))} "
                  f"| {f(cpu(e, t, 'after', 'ferry_migrate', 4))} | {f(server_cpu(e, t, 'after'))} "
                  f"| {f(cpu(e, t, 'reference', 'psql_copy'))} | {x(cpu_ratio)} "
                  f"| {x(ratio((e, t, 'reference', 'psql_copy'), (e, t, 'after', 'ferry_migrate')))} | {x(ceiling(e, t))} |")
        p("")

    if any(runs_of(e, t, "reference", "probe_ceiling") for e in exports for t in targets):
        p("**Against the target's ceiling:** `ferry-coordinator probe` of the same server right after the migrate "
          "(synthetic rows as wide as the export's, copied into a scratch table through 1, 2, 4, … connections the "
          "way a run loads that target; the best level counts) against Ferry's load phase (the report's "
          "`elapsed_seconds`: every shard decoded, copied and checkpointed, before finalize). Medians of per-run "
          "ratios.")
        p("")
        p("| export | target | Ferry load s | Ferry load items/s | probe ceiling rows/s | connections | saturated | Ferry ÷ ceiling |")
        p("|---|---|---:|---:|---:|---:|---|---:|")
        logs = os.path.join(os.path.dirname(raw_path), "logs")
        for e in exports:
            for t in targets:
                if not runs_of(e, t, "reference", "probe_ceiling"):
                    continue
                levels = []
                for r in runs:
                    try:
                        with open(os.path.join(logs, f"{e}-{t}-probe-{r}.json")) as handle:
                            probe = json.load(handle)
                        levels.append(f"{probe['ceiling_connections']}")
                        saturated = "yes" if probe["saturated"] else "no (a lower bound)"
                    except (OSError, ValueError, KeyError):
                        saturated = "?"
                p(f"| {EXPORT_NAMES.get(e, e)} | {TARGET_NAMES.get(t, t)} | {f(secs(e, t, 'after', 'ferry_load'))} "
                  f"| {n(rate(e, t, 'after', 'ferry_load'))} | {n(rate(e, t, 'reference', 'probe_ceiling'))} "
                  f"| {', '.join(levels) or '?'} | {saturated} "
                  f"| {x(rate_ratio((e, t, 'after', 'ferry_load'), (e, t, 'reference', 'probe_ceiling')))} |")
        p("")

    if any(runs_of(e, t, "after", "ferry_verify_deep") for e in exports for t in targets):
        p("**Deep verification:** `verify --deep` of the run just loaded (one streamed read of the table, every row "
          "turned into its item and hashed, compared per chunk with the digests the load recorded) against that "
          "run's whole migrate and its load phase; the goal is at most the load's time. Medians of per-run ratios.")
        p("")
        p("| export | target | verify --deep s | items/s | ÷ migrate | ÷ load |")
        p("|---|---|---:|---:|---:|---:|")
        for e in exports:
            for t in targets:
                if not runs_of(e, t, "after", "ferry_verify_deep"):
                    continue
                p(f"| {EXPORT_NAMES.get(e, e)} | {TARGET_NAMES.get(t, t)} | {f(secs(e, t, 'after', 'ferry_verify_deep'))} "
                  f"| {n(rate(e, t, 'after', 'ferry_verify_deep'))} "
                  f"| {x(ratio((e, t, 'after', 'ferry_verify_deep'), (e, t, 'after', 'ferry_migrate')))} "
                  f"| {x(ratio((e, t, 'after', 'ferry_verify_deep'), (e, t, 'after', 'ferry_load')))} |")
        p("")

    guide_items = int(meta.get("guide_items", 0))
    p(f"**The migration guide's import:** psycopg2, one INSERT per item (key columns + JSONB of the rest), one commit, "
      f"on the first {guide_items:,} items of the same export (items/s; the whole process), against Ferry's whole migrate "
      f"of the whole export.")
    p("")
    head = "| export | target | guide import items/s | Ferry items/s | Ferry ÷ guide |"
    rule = "|---|---|---:|---:|---:|"
    if has_before:
        head += f" before ({before}) items/s | before ÷ guide |"
        rule += "---:|---:|"
    p(head)
    p(rule)
    for e in exports:
        for t in targets:
            if not runs_of(e, t, "reference", "guide_insert"):
                continue
            line = (f"| {EXPORT_NAMES.get(e, e)} | {TARGET_NAMES.get(t, t)} | {n(rate(e, t, 'reference', 'guide_insert'))} "
                    f"| {n(rate(e, t, 'after', 'ferry_migrate'))} "
                    f"| {x(rate_ratio((e, t, 'after', 'ferry_migrate'), (e, t, 'reference', 'guide_insert')))} |")
            if has_before:
                line += (f" {n(rate(e, t, 'before', 'ferry_migrate'))} "
                         f"| {x(rate_ratio((e, t, 'before', 'ferry_migrate'), (e, t, 'reference', 'guide_insert')))} |")
            p(line)
    p("")

    p(f"**Decode:** DuckDB's `read_json` of every data file into an in-memory table against Ferry's decode stage "
      f"(gunzip, framing, typed DynamoDB JSON into Arrow batches, schema inference included; `ferry-bench-decode`), "
      f"same files, {meta.get('cores', '?')} threads each, no database.")
    p("")
    p("| export | DuckDB s | DuckDB items/s | Ferry decode s | Ferry decode items/s | Ferry ÷ DuckDB |")
    p("|---|---:|---:|---:|---:|---:|")
    for e in exports:
        if not runs_of(e, "-", "after", "ferry_decode"):
            continue
        p(f"| {EXPORT_NAMES.get(e, e)} | {f(secs(e, '-', 'reference', 'duckdb_decode'))} | {n(rate(e, '-', 'reference', 'duckdb_decode'))} "
          f"| {f(secs(e, '-', 'after', 'ferry_decode'))} | {n(rate(e, '-', 'after', 'ferry_decode'))} "
          f"| {x(rate_ratio((e, '-', 'after', 'ferry_decode'), (e, '-', 'reference', 'duckdb_decode')))} |")
    p("")

    if runs_of("-", "-", "after", "decode_core"):
        p("**Decode on one core:** `ferry-bench --decode-only` (the generator's items, one thread, best of 3 passes "
          "each): typed DynamoDB JSON into Arrow batches, then also encoded as binary COPY. The reference parser is "
          "the serde path the scanner falls back to, in the same binary; the before build's decoder is the one "
          "this round started from. Medians of the runs.")
        p("")
        head = "| stage | Ferry items/s | reference parser items/s | Ferry ÷ reference |"
        rule = "|---|---:|---:|---:|"
        if has_before:
            head += f" before ({before}) items/s | Ferry ÷ before |"
            rule += "---:|---:|"
        p(head)
        p(rule)
        for measure, label in (("decode_core", "decode alone"), ("decode_copy_core", "decode + COPY encoding")):
            line = (f"| {label} | {n(rate('-', '-', 'after', measure))} | {n(rate('-', '-', 'reference', measure))} "
                    f"| {x(rate_ratio(('-', '-', 'after', measure), ('-', '-', 'reference', measure)))} |")
            if has_before:
                line += (f" {n(rate('-', '-', 'before', measure))} "
                         f"| {x(rate_ratio(('-', '-', 'after', measure), ('-', '-', 'before', measure)))} |")
            p(line)
        p("")

    p("**Every run** (seconds; peak RSS of Ferry's migrate in MiB in brackets):")
    p("")
    p("| export | target | measure | " + " | ".join(f"run {r}" for r in runs) + " |")
    p("|---|---|---|" + "---:|" * len(runs))
    names = [
        ("after", "ferry_migrate", "Ferry migrate"),
        ("before", "ferry_migrate", f"Ferry migrate, before ({before})"),
        ("after", "ferry_load", "Ferry load phase"),
        ("reference", "probe_ceiling", "probe ceiling (the items at its best rate)"),
        ("reference", "psql_copy", "psql \\copy"),
        ("reference", "psql_copy_analyze", "psql \\copy + ANALYZE"),
        ("reference", "guide_insert", f"guide import ({guide_items:,} items)"),
        ("after", "ferry_decode", "Ferry decode"),
        ("reference", "duckdb_decode", "DuckDB read_json"),
        ("after", "decode_core", "decode on one core"),
        ("reference", "decode_core", "decode on one core, reference parser"),
        ("before", "decode_core", f"decode on one core, before ({before})"),
        ("after", "decode_copy_core", "decode + COPY encoding on one core"),
        ("reference", "decode_copy_core", "decode + COPY encoding on one core, reference parser"),
        ("before", "decode_copy_core", f"decode + COPY encoding on one core, before ({before})"),
    ]
    for e in exports + ["-"]:
        for t in targets + ["-"]:
            for build, measure, label in names:
                values = runs_of(e, t, build, measure)
                if not values:
                    continue
                cells = []
                for r in runs:
                    if r not in values:
                        cells.append("–")
                        continue
                    s, rss = values[r][0], values[r][2]
                    cells.append(f"{s:.2f}" + (f" ({rss / 1024:.0f})" if rss else ""))
                p(f"| {EXPORT_NAMES.get(e, e)} | {TARGET_NAMES.get(t, '–')} | {label} | " + " | ".join(cells) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How fast can the catch-up applier apply upserts and deletes to HeliosDB 4.41.1 inside ONE
transaction per chunk? A standalone measurement (no Ferry build, no third-party Python packages).

It starts its own `heliosdb-nano` (the binary `scripts/install-heliosdb` caches, or
$FERRY_HELIOSDB_BIN) in a temporary folder, exactly as tests/src/helios.rs does
(`start --listen 127.0.0.1 --port N --auth trust --http-port 0 --data-dir DIR`), builds a
100k-row table shaped like the catch-up bench's `shop_items` (composite key pk, sk; text,
numeric, bigint, boolean and jsonb columns; the overflow column; `_ferry_chunk`), a small
ledger table like `ferry.shards`, and times each way of issuing a chunk's statements through a
small built-in PostgreSQL wire client (simple and extended protocol, the extended one sent the
way tokio-postgres sends it: Parse/Describe/Sync, then Bind/Execute/Sync, then Close).

Every timing is repeated (default 3 times) and the median is printed:
form, rows per statement, in a transaction or not, records/s, ms per record.
Then it checks what each upsert form does inside a transaction (rollback, visibility to the
same and to another session, a key inserted earlier in the transaction, a key twice in one
statement).

usage: heliosdb-apply-ceiling.py [--rows 100000] [--chunk 2000] [--deletes 1000] [--reps 3]
                                 [--only checks,upserts,other,deletes,chunks] [--quick]
Runs single-threaded (one connection at a time); about 8-12 minutes on 2 shared cores.
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time

from heliosdb_local import HELIOSDB_VERSION, free_port, heliosdb_binary
SEP = "\x1f"  # Ferry's KEY_SEPARATOR


# ------------------------------------------------------------------------------------------
# A minimal PostgreSQL wire client (trust auth only).
# ------------------------------------------------------------------------------------------


class PgError(Exception):
    def __init__(self, fields):
        self.fields = fields
        self.code = fields.get("C")
        super().__init__(f"{fields.get('C')} {fields.get('M')}")


class Conn:
    _counter = 0

    def __init__(self, host, port, user="postgres", dbname="postgres"):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.status = b"I"
        body = struct.pack("!i", 196608)
        for k, v in (("user", user), ("database", dbname), ("client_encoding", "UTF8")):
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        while True:
            t, payload = self._read()
            if t == b"R":
                (kind,) = struct.unpack("!i", payload[:4])
                if kind != 0:
                    raise RuntimeError(f"auth method {kind} not supported (the script uses trust)")
            elif t == b"E":
                raise PgError(self._fields(payload))
            elif t == b"Z":
                self.status = payload
                break

    def _recv(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _read(self):
        head = self._recv(5)
        (length,) = struct.unpack("!i", head[1:])
        return head[:1], self._recv(length - 4)

    @staticmethod
    def _msg(t, body=b""):
        return t + struct.pack("!i", len(body) + 4) + body

    @staticmethod
    def _fields(payload):
        return {chr(p[0]): p[1:].decode(errors="replace") for p in payload.split(b"\0") if p}

    @staticmethod
    def _datarow(payload):
        (n,) = struct.unpack("!h", payload[:2])
        pos, row = 2, []
        for _ in range(n):
            (ln,) = struct.unpack("!i", payload[pos:pos + 4])
            pos += 4
            if ln < 0:
                row.append(None)
            else:
                row.append(payload[pos:pos + ln].decode())
                pos += ln
        return row

    def close(self):
        try:
            self.sock.sendall(self._msg(b"X"))
        finally:
            self.sock.close()

    def _collect(self, on_copy_in=None):
        tags, rows, err = [], [], None
        while True:
            t, p = self._read()
            if t == b"D":
                rows.append(self._datarow(p))
            elif t == b"C":
                tags.append(p[:-1].decode())
            elif t == b"E" and err is None:
                err = PgError(self._fields(p))
            elif t == b"G":
                on_copy_in()
            elif t == b"Z":
                self.status = p
                if err:
                    raise err
                return tags, rows

    # simple protocol
    def simple(self, sql):
        self.sock.sendall(self._msg(b"Q", sql.encode() + b"\0"))
        return self._collect()

    def rows(self, sql):
        return self.simple(sql)[1]

    def copy_in(self, sql, data: bytes, frame=1 << 16):
        def send():
            out = [self._msg(b"d", data[i:i + frame]) for i in range(0, len(data), frame)]
            out.append(self._msg(b"c"))
            self.sock.sendall(b"".join(out))

        self.sock.sendall(self._msg(b"Q", sql.encode() + b"\0"))
        return self._collect(on_copy_in=send)

    # extended protocol
    def _bind(self, stmt, params, fmt):
        parts = [b"\0" + stmt.encode() + b"\0", struct.pack("!hhh", 1, fmt, len(params))]
        for v in params:
            if v is None:
                parts.append(struct.pack("!i", -1))
            else:
                b = v.encode()
                parts.append(struct.pack("!i", len(b)) + b)
        parts.append(struct.pack("!hh", 1, 1))
        return self._msg(b"B", b"".join(parts))

    def _execute(self):
        return self._msg(b"E", b"\0" + struct.pack("!i", 0))

    def prepare(self, name, sql):
        """Parse + Describe + Sync, as tokio-postgres' prepare."""
        self.sock.sendall(
            self._msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))
            + self._msg(b"D", b"S" + name.encode() + b"\0")
            + self._msg(b"S")
        )
        self._collect()

    def close_statement(self, name):
        self.sock.sendall(self._msg(b"C", b"S" + name.encode() + b"\0") + self._msg(b"S"))
        self._collect()

    def execute_prepared(self, name, params, fmt=1):
        """Bind + Execute + Sync. Text values are sent in format 1 (binary), as tokio-postgres
        sends a &str for a TEXT parameter (binary text is the UTF-8 bytes)."""
        self.sock.sendall(self._bind(name, params, fmt) + self._execute() + self._msg(b"S"))
        return self._collect()[0]

    def execute(self, sql, params):
        """tokio-postgres `client.execute(&str, params)`: prepare a fresh named statement,
        execute it, close it."""
        Conn._counter += 1
        name = f"s{Conn._counter}"
        self.prepare(name, sql)
        try:
            return self.execute_prepared(name, params)
        finally:
            self.close_statement(name)

    def pipeline(self, name, param_lists, fmt=1):
        """Bind/Execute of a prepared statement per parameter list, one Sync: one round trip."""
        out = [self._bind(name, p, fmt) + self._execute() for p in param_lists]
        out.append(self._msg(b"S"))
        self.sock.sendall(b"".join(out))
        return self._collect()[0]


# ------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------


class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="heliosdb-apply-ceiling-")
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [heliosdb_binary(), "start", "--listen", "127.0.0.1", "--port", str(self.port),
             "--auth", "trust", "--http-port", "0", "--data-dir", os.path.join(self.dir, "data")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )
        deadline = time.time() + 60
        while True:
            try:
                c = self.connect()
                c.simple("SELECT 1")
                c.close()
                break
            except (OSError, PgError):
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"heliosdb-nano did not start; see {self.dir}/server.log")
                time.sleep(0.2)

    def connect(self):
        return Conn("127.0.0.1", self.port)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# The table and its rows
# ------------------------------------------------------------------------------------------

TABLE = "shop_items"
COLUMNS = [  # (name, SQL type), in value order; pk and sk are the key
    ("pk", "TEXT"), ("sk", "TEXT"), ("name", "TEXT"), ("email", "TEXT"), ("status", "TEXT"),
    ("created_at", "TEXT"), ("total", "NUMERIC"), ("qty", "BIGINT"), ("active", "BOOLEAN"),
    ("items", "JSONB"), ("prefs", "JSONB"), ("_extra", "JSONB"), ("_ferry_chunk", "BIGINT"),
]
KEYS = ["pk", "sk"]
NAMES = [c for c, _ in COLUMNS]


def ddl(table, single_key=False):
    cols = ", ".join(f'"{c}" {t}' + (" NOT NULL" if c in KEYS else "") for c, t in COLUMNS)
    if single_key:
        return f'CREATE TABLE "{table}" (id TEXT PRIMARY KEY, {cols})'
    return f'CREATE TABLE "{table}" ({cols}, PRIMARY KEY (pk, sk))'


def key_of(i):
    uid = 1000 + i // 3
    return f"USER#{uid}", ("PROFILE" if i % 3 == 0 else f"ORDER#{i:07d}")


def deep(rng, depth):
    value = {"leaf": rng.randrange(1000), "s": "deep", "l": [1.5, "x", {"k": "v"}]}
    for level in range(depth):
        value = {f"level{level}": value, "n": level}
    return value


def make_row(i, chunk, rng):
    pk, sk = key_of(i)
    return [
        pk, sk,
        rng.choice(["Ada", "Grace", "Zoë Ünïcode", "quote 'me'", "tab\there", "line\nbreak"]) + f" {i}",
        f"user{i}@example.com",
        rng.choice(["active", "inactive", "pending", "shipped", "archived"]),
        f"2026-10-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:07.{i % 1000:03d}Z",
        f"{rng.randrange(100, 10**8) / 100:.2f}",
        str(rng.randrange(1, 9)),
        rng.choice(["true", "false"]),
        json.dumps([{"sku": f"SKU-{rng.randrange(999)}", "qty": rng.randrange(1, 9)} for _ in range(rng.randrange(1, 4))]),
        json.dumps(deep(rng, 4)) if i % 3 == 0 else None,
        json.dumps({"big": str(rng.randrange(10**37, 10**38)), "tiny": "1E-130"}),
        str(chunk),
    ]


def copy_text(rows, single_key=False):
    def esc(v):
        if v is None:
            return "\\N"
        return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

    out = []
    for r in rows:
        vals = ([r[0] + SEP + r[1]] if single_key else []) + r
        out.append("\t".join(esc(v) for v in vals))
    return ("\n".join(out) + "\n").encode()


def lit(v):
    return "NULL" if v is None else "'" + v.replace("'", "''") + "'"


# ------------------------------------------------------------------------------------------
# Statement builders (Ferry's shapes, worker/src/sink/apply.rs)
# ------------------------------------------------------------------------------------------

INSERT_HEAD = f'INSERT INTO "{TABLE}" (' + ", ".join(f'"{c}"' for c in NAMES) + ") VALUES "
UPSERT_TAIL = ' ON CONFLICT ("pk", "sk") DO UPDATE SET ' + ", ".join(
    f'"{c}" = EXCLUDED."{c}"' for c in NAMES if c not in KEYS)


def upsert_params_sql(rows, style="cast"):
    """TableSql::upsert_sql: every value `CAST($n::text AS type)` (style cast), or `$n::text`,
    or a bare `$n`."""
    parts, n = [], 0
    for _ in range(rows):
        vals = []
        for _, t in COLUMNS:
            n += 1
            vals.append({"cast": f"CAST(${n}::text AS {t})", "text": f"${n}::text", "bare": f"${n}"}[style])
        parts.append("(" + ", ".join(vals) + ")")
    return INSERT_HEAD + ", ".join(parts) + UPSERT_TAIL


def upsert_literal_sql(rows, table=TABLE, conflict=True):
    head = INSERT_HEAD.replace(f'"{TABLE}"', f'"{table}"')
    body = ", ".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows)
    return head + body + (UPSERT_TAIL if conflict else "")


LEDGER_DDL = [
    "CREATE SCHEMA IF NOT EXISTS ferry",
    """CREATE TABLE IF NOT EXISTS ferry.shards (
        run_id TEXT NOT NULL, shard_id TEXT NOT NULL, data_key TEXT NOT NULL,
        committed_lines BIGINT NOT NULL DEFAULT 0, loaded_rows BIGINT NOT NULL DEFAULT 0,
        rejected_rows BIGINT NOT NULL DEFAULT 0, filtered_rows BIGINT NOT NULL DEFAULT 0,
        spilled_values BIGINT NOT NULL DEFAULT 0, generation BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending', error TEXT, copying_from BIGINT,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (run_id, shard_id))""",
]
# ledger/src/sql.rs ADVANCE_CHECKPOINT, sent as Ferry sends it (extended protocol).
ADVANCE_CHECKPOINT = """UPDATE ferry.shards SET committed_lines = $4::int8,
        loaded_rows = loaded_rows + $5::int8, rejected_rows = rejected_rows + $6::int8,
        spilled_values = spilled_values + $7::int8, filtered_rows = filtered_rows + $8::int8,
        state = 'pending', error = NULL, copying_from = NULL, updated_at = now()
    WHERE run_id = $1::text AND shard_id = $2::text AND committed_lines = $3::int8
        AND generation = $9::int8 AND state <> 'done'"""


class Ledger:
    def __init__(self):
        self.lines = 0

    def advance(self, c, records, literal=False):
        old, self.lines = self.lines, self.lines + records
        if literal:
            sql = (f"UPDATE ferry.shards SET committed_lines = {self.lines}, loaded_rows = loaded_rows + {records}, "
                   "rejected_rows = rejected_rows + 0, spilled_values = spilled_values + 0, "
                   "filtered_rows = filtered_rows + 0, state = 'pending', error = NULL, copying_from = NULL, "
                   f"updated_at = now() WHERE run_id = 'run-1' AND shard_id = 'shard-0007' "
                   f"AND committed_lines = {old} AND generation = 1 AND state <> 'done'")
            tags = c.simple(sql)[0]
        else:
            tags = c.execute(ADVANCE_CHECKPOINT, ["run-1", "shard-0007", str(old), str(self.lines), str(records),
                                                  "0", "0", "0", "1"])
        assert tags == ["UPDATE 1"], tags


LEDGER = Ledger()


# ------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------

RESULTS = []  # (group, form, rows/stmt, txn, records/s, ms/record, note)


def median_time(reps, prepare, run, restore=None):
    times = []
    for r in range(reps):
        state = prepare(r)
        t0 = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - t0)
        if restore:
            restore(state)
    return statistics.median(times), times


def record(group, form, per_stmt, txn, records, seconds, note="", extrapolated_from=None):
    rate = records / seconds
    ms = seconds * 1e3 / records
    RESULTS.append((group, form, per_stmt, txn, rate, ms, note))
    print(f"  {group:<7} {form:<52} {str(per_stmt):>6} {txn:<7} {rate:>10.0f} rec/s {ms:>8.3f} ms/rec  {note}",
          flush=True)


def in_txn(c, records, body, savepoints=False):
    c.simple("BEGIN")
    try:
        LEDGER.advance(c, records)
        body()
        c.simple("COMMIT")
    except Exception:
        if c.status != b"I":
            c.simple("ROLLBACK")
        raise


class Data:
    """The keys of the table and fresh images of them. A key is never written again once it
    was deleted: HeliosDB 4.41.1 can fail to re-insert a deleted key (see `art_reinsert_check`),
    so the upsert and delete measurements only ever touch keys that were never deleted."""

    def __init__(self, n, seed=7):
        self.n = n
        self.rng = random.Random(seed)
        self.live = list(range(n))  # loaded keys never deleted
        self.rng.shuffle(self.live)
        self.next_new = n  # keys beyond the loaded ones (inserts)
        self.chunk = 1

    def updates(self, count):
        """`count` new images of existing keys, in random order (a CDC window's order)."""
        self.chunk += 1
        idx = self.rng.sample(self.live, count)
        return [make_row(i, self.chunk, self.rng) for i in idx]

    def inserts(self, count):
        self.chunk += 1
        rows = [make_row(i, self.chunk, self.rng) for i in range(self.next_new, self.next_new + count)]
        self.next_new += count
        return rows

    def take_for_delete(self, count):
        """`count` live keys (random across the table), sorted, never to be used again."""
        idx, self.live = self.live[-count:], self.live[:-count]
        return sorted(key_of(i) for i in idx)


def load(c, table, n, single_key=False, seed=1):
    rng = random.Random(seed)
    c.simple(ddl(table, single_key))
    batch = 20000
    for start in range(0, n, batch):
        rows = [make_row(i, 1, rng) for i in range(start, min(n, start + batch))]
        c.copy_in(f'COPY "{table}" FROM STDIN', copy_text(rows, single_key))
    (count,), = c.rows(f'SELECT count(*) FROM "{table}"')
    assert int(count) == n, count


# ------------------------------------------------------------------------------------------
# Upserts
# ------------------------------------------------------------------------------------------


def upserts_params(c, rows, per_stmt, style="cast", savepoints=True):
    """upsert_rows: per statement SAVEPOINT, client.execute(sql, text params), RELEASE."""
    for i in range(0, len(rows), per_stmt):
        batch = rows[i:i + per_stmt]
        sql = upsert_params_sql(len(batch), style)
        params = [v for r in batch for v in r]
        if savepoints:
            c.simple("SAVEPOINT ferry_apply")
        c.execute(sql, params)
        if savepoints:
            c.simple("RELEASE SAVEPOINT ferry_apply")


def upserts_literal(c, rows, per_stmt, savepoints=False):
    for i in range(0, len(rows), per_stmt):
        sql = upsert_literal_sql(rows[i:i + per_stmt])
        if savepoints:
            c.simple("SAVEPOINT ferry_apply")
        c.simple(sql)
        if savepoints:
            c.simple("RELEASE SAVEPOINT ferry_apply")


def upserts_literal_one_message(c, rows, per_stmt, records):
    """The whole chunk as one simple-query message: BEGIN; checkpoint; upserts; COMMIT."""
    old, LEDGER.lines = LEDGER.lines, LEDGER.lines + records
    parts = ["BEGIN",
             f"UPDATE ferry.shards SET committed_lines = {LEDGER.lines}, loaded_rows = loaded_rows + {records}, "
             f"state = 'pending', updated_at = now() WHERE run_id = 'run-1' AND shard_id = 'shard-0007' "
             f"AND committed_lines = {old} AND generation = 1 AND state <> 'done'"]
    parts += [upsert_literal_sql(rows[i:i + per_stmt]) for i in range(0, len(rows), per_stmt)]
    parts.append("COMMIT")
    tags, _ = c.simple(";\n".join(parts))
    assert tags[1] == "UPDATE 1" and tags[-1] == "COMMIT", tags[:2] + tags[-1:]


def bench_upserts(c, data, args):
    n = args.chunk
    reps = args.reps
    print(f"\n== upserts: chunks of {n} new images of existing keys on the {args.rows}-row table ==", flush=True)

    def run_case(form, per_stmt, txn, fn, rows_fn=data.updates, note="", records=n):
        def go(rows):
            if txn == "in-txn":
                in_txn(c, len(rows), lambda: fn(rows))
            else:
                fn(rows)
        secs, _ = median_time(reps, lambda r: rows_fn(records), go)
        record("upsert", form, per_stmt, txn, records, secs, note)

    sizes_a = [50, 200, 500, 1000] if not args.quick else [200]
    sizes_b = [100, 500, 2000] if not args.quick else [500]
    # (a) Ferry's current form
    for per in sizes_a:
        run_case("(a) $n CAST($n::text AS t), extended, savepoints", per, "in-txn",
                 lambda rows, per=per: upserts_params(c, rows, per, "cast", True))
    # (a) variants: no savepoints, $n::text, bare $n
    run_case("(a) $n CAST(..), extended, no savepoints", 200, "in-txn",
             lambda rows: upserts_params(c, rows, 200, "cast", False))
    run_case("(a) $n::text, extended, no savepoints", 200, "in-txn",
             lambda rows: upserts_params(c, rows, 200, "text", False))
    run_case("(a) $n CAST(..), extended (reference)", 200, "autocommit",
             lambda rows: upserts_params(c, rows, 200, "cast", False))
    # (b) literals over the simple protocol
    for per in sizes_b:
        run_case("(b) literal VALUES, simple protocol", per, "in-txn",
                 lambda rows, per=per: upserts_literal(c, rows, per))
    for per in sizes_b:
        run_case("(b) literal VALUES, simple protocol", per, "autocommit",
                 lambda rows, per=per: upserts_literal(c, rows, per))
    run_case("(b) literal, savepoint around each statement", 500, "in-txn",
             lambda rows: upserts_literal(c, rows, 500, savepoints=True))
    # the whole chunk in one message
    secs, _ = median_time(reps, lambda r: data.updates(n),
                          lambda rows: upserts_literal_one_message(c, rows, 500, len(rows)))
    record("upsert", "(b) literal, whole txn in ONE simple-query message", 500, "in-txn", n, secs)
    # new keys (the INSERT leg of the upsert)
    run_case("(b) literal VALUES, new keys (insert leg)", 500, "in-txn",
             lambda rows: upserts_literal(c, rows, 500), rows_fn=data.inserts)
    run_case("(a) $n CAST(..), new keys (insert leg)", 200, "in-txn",
             lambda rows: upserts_params(c, rows, 200, "cast", True), rows_fn=data.inserts)
    # bigger chunks: the per-row cost should not depend on the chunk
    if not args.quick:
        run_case("(b) literal VALUES, chunk of 5000", 500, "in-txn",
                 lambda rows: upserts_literal(c, rows, 500), records=5000)


# ------------------------------------------------------------------------------------------
# Other upsert shapes
# ------------------------------------------------------------------------------------------


def bench_other(c, data, args):
    n = args.chunk
    reps = args.reps
    print("\n== other shapes ==", flush=True)

    # (d1) one prepared statement (fixed rows per statement) reused, Bind/Execute pipelined
    per = 250
    assert n % per == 0, "--chunk must be a multiple of 250"
    sql = upsert_params_sql(per, "cast")
    c.prepare("ups200", sql)

    def pipelined(rows):
        lists = [[v for r in rows[i:i + per] for v in r] for i in range(0, len(rows), per)]
        c.pipeline("ups200", lists)

    def prepared_each(rows):
        for i in range(0, len(rows), per):
            c.execute_prepared("ups200", [v for r in rows[i:i + per] for v in r])

    secs, _ = median_time(reps, lambda r: data.updates(n), lambda rows: in_txn(c, len(rows), lambda: prepared_each(rows)))
    record("other", "(d) prepared once, Bind/Execute/Sync per statement", per, "in-txn", n, secs, "params: not transactional")
    secs, _ = median_time(reps, lambda r: data.updates(n), lambda rows: in_txn(c, len(rows), lambda: pipelined(rows)))
    record("other", "(d) prepared once, all Bind/Execute, one Sync", per, "in-txn", n, secs, "params: not transactional")
    c.close_statement("ups200")

    # (d2) literal values with explicit casts
    def typed_literal_sql(rows):
        body = ", ".join("(" + ", ".join(
            "NULL" if v is None else (lit(v) if t == "TEXT" else f"{lit(v)}::{t}") for v, (_, t) in zip(r, COLUMNS)) + ")"
            for r in rows)
        return INSERT_HEAD + body + UPSERT_TAIL

    def typed(rows):
        for i in range(0, len(rows), 500):
            c.simple(typed_literal_sql(rows[i:i + 500]))

    secs, _ = median_time(reps, lambda r: data.updates(n), lambda rows: in_txn(c, len(rows), lambda: typed(rows)))
    record("other", "(d) literal with '..'::type casts", 500, "in-txn", n, secs)

    # (d3) plain multi-row literal INSERT (no ON CONFLICT) of new keys: HeliosDB's in-transaction
    # literal fast path (no SQL parser); an upper bound, not an upsert
    def plain(rows):
        for i in range(0, len(rows), 500):
            c.simple(upsert_literal_sql(rows[i:i + 500], conflict=False))

    secs, _ = median_time(reps, lambda r: data.inserts(n), lambda rows: in_txn(c, len(rows), lambda: plain(rows)))
    record("other", "(d) plain literal INSERT, new keys (no upsert)", 500, "in-txn", n, secs, "upper bound")

    # (d4) COPY inside the transaction (new keys only: COPY has no conflict clause)
    def copy_rows(rows):
        c.copy_in(f'COPY "{TABLE}" FROM STDIN', copy_text(rows))

    secs, _ = median_time(reps, lambda r: data.inserts(n), lambda rows: in_txn(c, len(rows), lambda: copy_rows(rows)))
    record("other", "(d) COPY of new keys inside the txn (no upsert)", "all", "in-txn", n, secs)
    secs, _ = median_time(reps, lambda r: data.inserts(n), copy_rows)
    record("other", "(d) COPY of new keys, autocommit fast path", "all", "autocommit", n, secs)

    # (d5) SET bulk_load_mode = on, literal upserts in the txn
    try:
        c.simple("SET bulk_load_mode = on")
        secs, _ = median_time(reps, lambda r: data.updates(n),
                              lambda rows: in_txn(c, len(rows), lambda: upserts_literal(c, rows, 500)))
        record("other", "(d) literal upserts with SET bulk_load_mode = on", 500, "in-txn", n, secs)
    except PgError as e:
        print("  bulk_load_mode:", e)
    finally:
        try:
            c.simple("SET bulk_load_mode = off")
        except PgError:
            pass

    # (d6) shapes HeliosDB refuses (reported, not timed)
    for label, sql in [
        ("UPDATE … FROM (VALUES …)",
         f'UPDATE "{TABLE}" SET total = v.total::numeric FROM (VALUES (\'USER#1000\', \'PROFILE\', \'1.00\')) '
         f'AS v(pk, sk, total) WHERE "{TABLE}".pk = v.pk AND "{TABLE}".sk = v.sk'),
        ("MERGE", f'MERGE INTO "{TABLE}" t USING (VALUES (\'USER#1000\', \'PROFILE\')) AS v(pk, sk) '
                  f'ON t.pk = v.pk AND t.sk = v.sk WHEN MATCHED THEN UPDATE SET qty = 1'),
        ("INSERT … SELECT … ON CONFLICT DO UPDATE",
         f'INSERT INTO "{TABLE}" (pk, sk, qty) SELECT pk, sk, 5 FROM "{TABLE}" WHERE pk = \'USER#1000\' '
         f'ON CONFLICT (pk, sk) DO UPDATE SET qty = EXCLUDED.qty'),
        ("DELETE … USING (VALUES …)",
         f'DELETE FROM "{TABLE}" USING (VALUES (\'USER#999999\', \'X\')) AS v(pk, sk) '
         f'WHERE "{TABLE}".pk = v.pk AND "{TABLE}".sk = v.sk'),
        ("(pk, sk) IN ((..), (..)) row-value IN list",
         f'DELETE FROM "{TABLE}" WHERE (pk, sk) IN ((\'USER#999999\', \'X\'), (\'USER#999998\', \'Y\'))'),
    ]:
        c.simple("BEGIN")
        try:
            tags, _ = c.simple(sql)
            print(f"  {label}: accepted ({tags})")
        except PgError as e:
            print(f"  {label}: refused: {e}")
        finally:
            c.simple("ROLLBACK")


# ------------------------------------------------------------------------------------------
# Deletes
# ------------------------------------------------------------------------------------------


def helios_delete_sql_params(count, table=TABLE):
    """TableSql::helios_delete_sql for a (text, text) key: range of the first key column, then
    the whole key as one text in an IN list of text parameters."""
    lst = ", ".join(f"${i}::text" for i in range(4, 4 + count))
    return (f'DELETE FROM "{table}" WHERE "pk" >= $1::text AND "pk" <= $2::text AND '
            f'"pk" || $3::text || "sk" IN ({lst})')


def helios_delete_literal(keys, table):
    lo, hi = keys[0][0], keys[-1][0]
    lst = ", ".join(lit(pk + SEP + sk) for pk, sk in keys)
    return (f'DELETE FROM "{table}" WHERE "pk" >= {lit(lo)} AND "pk" <= {lit(hi)} AND '
            f'"pk" || {lit(SEP)} || "sk" IN ({lst})')


def tree_predicate(keys, leaf=8, fanout=4):
    """A WHERE clause that finds a row among sorted (pk, sk) keys in O(log n) comparisons: a
    search tree over pk written as nested ORs of `(pk >= lo AND pk < hi AND (subtree))` (HeliosDB
    evaluates AND/OR lazily, so a row only descends into the one range that holds it), with
    `pk = .. AND sk IN (..)` at the leaves. Fan-out 4 keeps the nesting under sqlparser's
    recursion limit (a binary tree of 5000 keys exceeds it)."""
    groups = []
    for pk, sk in keys:
        if groups and groups[-1][0] == pk:
            groups[-1][1].append(sk)
        else:
            groups.append((pk, [sk]))

    def leaf_of(gs):
        return " OR ".join(
            f'("pk" = {lit(pk)} AND "sk" = {lit(sks[0])})' if len(sks) == 1 else
            f'("pk" = {lit(pk)} AND "sk" IN ({", ".join(lit(x) for x in sks)}))' for pk, sks in gs)

    def build(gs):
        if len(gs) <= leaf:
            return leaf_of(gs)
        size = -(-len(gs) // fanout)
        parts = [gs[i:i + size] for i in range(0, len(gs), size)]
        terms = []
        for j, part in enumerate(parts):
            cond = []
            if j > 0:
                cond.append(f'"pk" >= {lit(part[0][0])}')
            if j < len(parts) - 1:
                cond.append(f'"pk" < {lit(parts[j + 1][0][0])}')
            terms.append("(" + " AND ".join(cond + [f"({build(part)})"]) + ")")
        return " OR ".join(terms)

    return build(groups)


def bench_deletes(c, data, args):
    reps = args.reps
    k = args.deletes
    n = args.rows
    print(f"\n== deletes of {k} keys (random across the table) on the {n}-row table ==", flush=True)
    sample = 10 if not args.quick else 3

    def restore(table, single):
        def put_back(keys):
            # the table is brought back to its size with NEW keys (autocommit COPY): a deleted
            # key is never re-inserted (see art_reinsert_check)
            rows = data.inserts(len(keys))
            try:
                c.copy_in(f'COPY "{table}" FROM STDIN', copy_text(rows, single))
            except PgError as e:
                print(f"    (restoring {len(rows)} rows failed: {e})")
        return put_back

    def case(form, per_stmt, txn, count, body, table=TABLE, single=False, note=""):
        def go(keys):
            if txn == "in-txn":
                in_txn(c, len(keys), lambda: body(keys))
            else:
                body(keys)
        secs, _ = median_time(reps, lambda r: data.take_for_delete(count), go, restore(table, single))
        record("delete", form, per_stmt, txn, count, secs, note)

    def check(tags, expected):
        assert tags == [f"DELETE {expected}"], (tags, expected)

    # per key, composite key (a scan per statement): timed on a sample
    def per_key_params(keys):
        for pk, sk in keys:
            check(c.execute('DELETE FROM "shop_items" WHERE "pk" = $1::text AND "sk" = $2::text', [pk, sk]), 1)

    def per_key_literal(keys):
        for pk, sk in keys:
            check(c.simple(f'DELETE FROM "{TABLE}" WHERE "pk" = {lit(pk)} AND "sk" = {lit(sk)}')[0], 1)

    case("per key, $1 $2 extended (delete_one_sql)", 1, "in-txn", sample, per_key_params,
         note=f"timed on {sample} keys")
    case("per key, literal", 1, "in-txn", sample, per_key_literal, note=f"timed on {sample} keys")
    case("per key, literal", 1, "autocommit", sample, per_key_literal, note=f"timed on {sample} keys")

    # the current batched form: 500 keys per statement, extended protocol
    def batched_params(keys, per=500):
        for i in range(0, len(keys), per):
            b = keys[i:i + per]
            params = [b[0][0], b[-1][0], SEP] + [pk + SEP + sk for pk, sk in b]
            check(c.execute(helios_delete_sql_params(len(b)), params), len(b))

    def batched_literal(keys, per):
        for i in range(0, len(keys), per):
            b = keys[i:i + per]
            check(c.simple(helios_delete_literal(b, TABLE))[0], len(b))

    def in_list_literal(keys, per):
        for i in range(0, len(keys), per):
            b = keys[i:i + per]
            lst = ", ".join(lit(pk + SEP + sk) for pk, sk in b)
            check(c.simple(f'DELETE FROM "{TABLE}" WHERE "pk" || {lit(SEP)} || "sk" IN ({lst})')[0], len(b))

    def tree(keys, per):
        for i in range(0, len(keys), per):
            b = keys[i:i + per]
            check(c.simple(f'DELETE FROM "{TABLE}" WHERE {tree_predicate(b)}')[0], len(b))

    case("(c) current batched: range + key text IN ($n), extended", 500, "in-txn", k, batched_params)
    case("(c) current batched: range + key text IN ($n), extended", 500, "autocommit", k, batched_params)
    for per in ([100, 250, 500, k] if not args.quick else [250]):
        case("(c) batched literal: range + key text IN (..)", per, "in-txn", k,
             lambda keys, per=per: batched_literal(keys, per))
    case("(c) IN list literal, no range: key text IN (..)", k, "in-txn", k, lambda keys: in_list_literal(keys, k))
    case("(d) search-tree predicate, literal", k, "in-txn", k, lambda keys: tree(keys, k))
    case("(d) search-tree predicate, literal", k, "autocommit", k, lambda keys: tree(keys, k))
    if not args.quick:
        case("(d) search-tree predicate, 5000 keys", 5000, "in-txn", 5000, lambda keys: tree(keys, 5000))

    # single-column primary key table (id = pk || sep || sk)
    single = TABLE + "_id"
    print(f"  (loading {single}: the same rows with a one-column text primary key `id`)", flush=True)
    load(c, single, n, single_key=True)

    def id_of(key):
        return lit(key[0] + SEP + key[1])

    def per_id_literal(keys):
        for key in keys:
            check(c.simple(f'DELETE FROM "{single}" WHERE id = {id_of(key)}')[0], 1)

    def per_id_params(keys):
        for pk, sk in keys:
            check(c.execute(f'DELETE FROM "{single}" WHERE id = $1::text', [pk + SEP + sk]), 1)

    def per_id_after_write(keys):
        # the table already written in this transaction (as by an earlier delete or upsert)
        c.simple(f'UPDATE "{single}" SET qty = qty WHERE id = {id_of(keys[0])}')
        per_id_literal(keys[1:])

    def id_in_list(keys):
        check(c.simple(f'DELETE FROM "{single}" WHERE id IN ({", ".join(id_of(x) for x in keys)})')[0], len(keys))

    case("1-col PK: per key literal id = '..'", 1, "autocommit", k, per_id_literal, table=single, single=True,
         note="index point lookup")
    case("1-col PK: per key id = $1 extended", 1, "autocommit", sample, per_id_params, table=single, single=True,
         note=f"timed on {sample} keys")
    case("1-col PK: one key literal, first write of the txn", 1, "in-txn", 1, per_id_literal, table=single,
         single=True)
    case("1-col PK: one key literal after a write to the table", 1, "in-txn", 2, per_id_after_write, table=single,
         single=True, note="1 UPDATE + 1 DELETE")
    case("1-col PK: per key literal id = '..'", 1, "in-txn", sample, per_id_literal, table=single,
         single=True, note=f"timed on {sample} keys")
    case("1-col PK: id IN (..) literal", k, "in-txn", k, id_in_list, table=single, single=True)
    c.simple(f'DROP TABLE "{single}"')


def bench_chunks(c, data, args):
    """Whole chunks as the applier would send them: the checkpoint, the deletes, the upserts,
    in one transaction. A chunk of --chunk change records: 10% deletes, 90% upserts (a fifth
    of them new keys)."""
    reps = args.reps
    n = args.chunk
    print(f"\n== whole chunks: {n} change records (10% deletes, 72% updates, 18% inserts) ==", flush=True)

    def prepare(r):
        dels = data.take_for_delete(n // 10)
        ups = data.updates(n * 72 // 100) + data.inserts(n - n // 10 - n * 72 // 100)
        random.Random(r).shuffle(ups)
        return dels, ups

    def current(state):
        dels, ups = state

        def body():
            # helios_delete_batches + upsert_rows as they are today
            c.simple("SAVEPOINT ferry_apply")
            for i in range(0, len(dels), 500):
                b = dels[i:i + 500]
                c.execute(helios_delete_sql_params(len(b)), [b[0][0], b[-1][0], SEP] + [pk + SEP + sk for pk, sk in b])
            c.simple("RELEASE SAVEPOINT ferry_apply")
            upserts_params(c, ups, min(500, 60_000 // len(COLUMNS)), "cast", True)  # rows_per_statement

        in_txn(c, len(dels) + len(ups), body)

    def proposed(state, one_message=False):
        dels, ups = state
        if one_message:
            records = len(dels) + len(ups)
            old, LEDGER.lines = LEDGER.lines, LEDGER.lines + records
            parts = ["BEGIN",
                     f"UPDATE ferry.shards SET committed_lines = {LEDGER.lines}, loaded_rows = loaded_rows + "
                     f"{records}, state = 'pending', updated_at = now() WHERE run_id = 'run-1' AND shard_id = "
                     f"'shard-0007' AND committed_lines = {old} AND generation = 1 AND state <> 'done'",
                     f'DELETE FROM "{TABLE}" WHERE {tree_predicate(dels)}']
            parts += [upsert_literal_sql(ups[i:i + 500]) for i in range(0, len(ups), 500)]
            parts.append("COMMIT")
            tags, _ = c.simple(";\n".join(parts))
            assert tags[1] == "UPDATE 1" and tags[2] == f"DELETE {len(dels)}" and tags[-1] == "COMMIT", tags[:3]
            return

        def body():
            tags = c.simple(f'DELETE FROM "{TABLE}" WHERE {tree_predicate(dels)}')[0]
            assert tags == [f"DELETE {len(dels)}"], tags
            upserts_literal(c, ups, 500)

        in_txn(c, len(dels) + len(ups), body)

    for label, fn in [
        ("current: $n batched deletes + $n upserts (savepoints)", current),
        ("proposed: 1 search-tree DELETE + literal upserts", proposed),
        ("proposed, whole txn in one simple-query message", lambda st: proposed(st, True)),
    ]:
        secs, _ = median_time(reps, prepare, fn)
        record("chunk", label, 500, "in-txn", n, secs)


# ------------------------------------------------------------------------------------------
# Correctness inside a transaction
# ------------------------------------------------------------------------------------------


def correctness(server):
    print("\n== correctness of each upsert form inside a transaction ==", flush=True)
    c, other = server.connect(), server.connect()
    c.simple('CREATE TABLE ck (pk TEXT NOT NULL, sk TEXT NOT NULL, v NUMERIC, j JSONB, PRIMARY KEY (pk, sk))')
    up_params = ('INSERT INTO ck (pk, sk, v, j) VALUES {rows} '
                 'ON CONFLICT (pk, sk) DO UPDATE SET v = EXCLUDED.v, j = EXCLUDED.j')
    findings = []

    def params(rows):
        ph, vals, n = [], [], 0
        for r in rows:
            ph.append("(" + ", ".join(f"CAST(${n + i + 1}::text AS {t})" for i, t in
                                      enumerate(["TEXT", "TEXT", "NUMERIC", "JSONB"])) + ")")
            n += 4
            vals += list(r)
        return c.execute(up_params.format(rows=", ".join(ph)), vals)

    def literal(rows):
        return c.simple(up_params.format(rows=", ".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows)))[0]

    def value(conn, pk):
        got = conn.rows(f"SELECT v FROM ck WHERE pk = {lit(pk)} AND sk = 's'")
        return got[0][0] if got else None

    def attempt(f):
        try:
            return f()
        except PgError as e:
            if c.status == b"E":
                c.simple("ROLLBACK")
            return f"ERROR {e}"

    for name, up in (("extended $n (current)", params), ("literal simple", literal)):
        p = "P" if up is params else "L"
        c.simple(f"INSERT INTO ck VALUES ('{p}1', 's', 1, '{{}}'), ('{p}2', 's', 1, '{{}}')")
        out = {}
        # 1. update of an existing row, then ROLLBACK
        c.simple("BEGIN")
        out["tag"] = attempt(lambda: up([(f"{p}1", "s", "2", "{}")]))
        out["same session sees (expect 2)"] = value(c, f"{p}1")
        out["other session sees before COMMIT (expect 1)"] = value(other, f"{p}1")
        c.simple("ROLLBACK")
        out["after ROLLBACK (expect 1)"] = value(c, f"{p}1")
        # 2. update then COMMIT
        c.simple("BEGIN")
        attempt(lambda: up([(f"{p}2", "s", "3", "{}")]))
        c.simple("COMMIT")
        out["after COMMIT (expect 3)"] = value(c, f"{p}2")
        # 3. a key inserted earlier in the same transaction, upserted again
        c.simple("BEGIN")
        r1 = attempt(lambda: up([(f"{p}3", "s", "4", "{}")]))
        r2 = attempt(lambda: up([(f"{p}3", "s", "5", "{}")]))
        if c.status == b"T":
            c.simple("COMMIT")
        out["key inserted earlier in the txn, upserted again (expect 5)"] = f"{r1} / {r2} -> {value(c, p + '3')}"
        # 4. the same new key twice in one statement
        c.simple("BEGIN")
        r = attempt(lambda: up([(f"{p}4", "s", "6", "{}"), (f"{p}4", "s", "7", "{}")]))
        if c.status == b"T":
            c.simple("COMMIT")
        out["same new key twice in one statement (PostgreSQL: error 21000)"] = f"{r} -> {value(c, p + '4')}"
        # 5. the same existing key twice in one statement
        c.simple("BEGIN")
        r = attempt(lambda: up([(f"{p}1", "s", "8", "{}"), (f"{p}1", "s", "9", "{}")]))
        if c.status == b"T":
            c.simple("COMMIT")
        out["same existing key twice in one statement (PostgreSQL: error 21000)"] = f"{r} -> {value(c, p + '1')}"
        # 6. a deleted key upserted in the same txn (routed moves, deletes then upserts)
        c.simple("BEGIN")
        c.simple(f"DELETE FROM ck WHERE pk = '{p}2' AND sk = 's'")
        r = attempt(lambda: up([(f"{p}2", "s", "10", "{}")]))
        if c.status == b"T":
            c.simple("COMMIT")
        out["key deleted earlier in the txn, upserted (expect 10)"] = f"{r} -> {value(c, p + '2')}"
        print(f"  {name}:")
        for key, val in out.items():
            print(f"    {key}: {val}")
        findings.append((name, out))

    # literal round trip of awkward text
    awkward = "quote ' back\\slash tab\t nl\n ünï \u2603 $1 ?"
    c.simple(f"INSERT INTO ck VALUES ({lit('awk')}, 's', 1, {lit(json.dumps({'a': awkward}))}) "
             f"ON CONFLICT (pk, sk) DO UPDATE SET j = EXCLUDED.j")
    c.simple(f"INSERT INTO ck VALUES ({lit(awkward)}, 's', 1, NULL)")
    got = c.rows(f"SELECT pk FROM ck WHERE pk = {lit(awkward)}")
    print(f"  literal round trip of {awkward!r}: {'ok' if got and got[0][0] == awkward else got}")
    c.simple("DROP TABLE ck")
    c.close()
    other.close()
    return findings


def art_reinsert_check(server, n=20000, deleted=400):
    """HeliosDB 4.41.1: deleting a few hundred keys, then inserting some of them again."""
    print(f"\n== re-inserting deleted keys ({n}-row table, {deleted} keys deleted in autocommit, then "
          f"re-inserted one row per statement) ==", flush=True)
    c = server.connect()
    load(c, "art", n)
    rng = random.Random(5)
    idx = sorted(rng.sample(range(n), deleted), key=key_of)
    keys = [key_of(i) for i in idx]
    for i in range(0, len(keys), 200):
        b = keys[i:i + 200]
        c.simple(f'DELETE FROM "art" WHERE {tree_predicate(b)}')
    failed = []
    for i in idx:
        try:
            c.simple(upsert_literal_sql([make_row(i, 2, rng)], table="art"))
        except PgError as e:
            failed.append((key_of(i), str(e)))
    (count,), = c.rows('SELECT count(*) FROM "art"')
    (scanned,), = c.rows('SELECT count(*) FROM "art" WHERE qty >= 0 OR qty IS NULL')
    print(f"  {deleted - len(failed)} re-inserted, {len(failed)} refused: {failed[:2]}")
    print(f"  afterwards count(*) = {count}, counted by a scan = {scanned} (expected {n})")
    c.simple('DROP TABLE "art"')
    c.close()


# ------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=2000, help="upserts per chunk (transaction)")
    ap.add_argument("--deletes", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", help="comma-separated subset of: checks,upserts,other,deletes,chunks")
    ap.add_argument("--quick", action="store_true", help="fewer sizes (a smoke run)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else {"checks", "upserts", "other", "deletes", "chunks"}

    started = time.time()
    server = Server()
    print(f"heliosdb-nano {HELIOSDB_VERSION} on port {server.port}, data in {server.dir}", flush=True)
    try:
        c = server.connect()
        for stmt in LEDGER_DDL:
            c.simple(stmt)
        c.simple("INSERT INTO ferry.shards (run_id, shard_id, data_key, generation) VALUES " + ", ".join(
            f"('run-1', 'shard-{i:04d}', 'data/{i}.json.gz', 1)" for i in range(200)))
        if "checks" in only:
            correctness(server)
            art_reinsert_check(server)
        if only - {"checks"}:
            t0 = time.time()
            load(c, TABLE, args.rows)
            print(f"\nloaded {args.rows} rows into {TABLE} in {time.time() - t0:.1f} s (autocommit COPY)", flush=True)
            data = Data(args.rows)
            if "upserts" in only:
                bench_upserts(c, data, args)
            if "other" in only:
                bench_other(c, data, args)
            if "deletes" in only:
                bench_deletes(c, data, args)
            if "chunks" in only:
                bench_chunks(c, data, args)
        c.close()
    finally:
        server.stop()

    if RESULTS:
        print(f"\n== summary (median of {args.reps}; chunk = one transaction with the checkpoint UPDATE "
              f"first, unless autocommit) ==")
        print(f"{'group':<7} {'form':<52} {'rows/stmt':>9} {'txn':<10} {'records/s':>10} {'ms/record':>10}  note")
        for g, form, per, txn, rate, ms, note in RESULTS:
            print(f"{g:<7} {form:<52} {str(per):>9} {txn:<10} {rate:>10.0f} {ms:>10.3f}  {note}")
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()

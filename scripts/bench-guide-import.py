#!/usr/bin/env python3
"""The migration guide's import approach, as scripts/bench measures it against Ferry: psycopg2,
one INSERT per item, one commit at the end (shared/docs/migration-guide.txt, "Step 3: Transform
and Import Data").

The guide's script reads a plain-JSON scan dump; this one reads the DynamoDB export itself (the
data files in manifest-files.json order, gzip JSON lines, items deserialized with boto3's
TypeDeserializer, as a script written for an export would) and stores each item's key attributes
as text and the rest as JSONB, numbers as floats through the guide's DecimalEncoder (lossy past 15
digits, as the guide's is), sets as lists and binary as base64.

usage: bench-guide-import.py --export DIR --target URL --key PK[,SK] --items N [--table T]
Loads the first N items of the export into a new table T (default guide_items) and prints one
JSON line: {"items": N, "seconds": ...} (seconds from connecting to the commit).
"""

import argparse
import base64
import decimal
import gzip
import json
import os
import time
from decimal import Decimal

import psycopg2
from boto3.dynamodb.types import Binary, TypeDeserializer
from psycopg2 import sql


class Deserializer(TypeDeserializer):
    """boto3's TypeDeserializer, except for numbers its 38-digit context refuses although
    DynamoDB writes them (a 1.5E50 comes back as 51 digits, trailing zeros and all): those are
    read with Decimal(), as a script that met them would have to."""

    def _deserialize_n(self, value):
        try:
            return super()._deserialize_n(value)
        except (decimal.Rounded, decimal.Inexact):
            return Decimal(value)


class DecimalEncoder(json.JSONEncoder):
    """The guide's encoder (Decimal as float), and what an export adds: sets and binary."""

    def default(self, obj):
        if isinstance(obj, Decimal):
            return float(obj)
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        if isinstance(obj, Binary):
            return base64.b64encode(obj.value).decode()
        if isinstance(obj, (bytes, bytearray)):
            return base64.b64encode(bytes(obj)).decode()
        return super().default(obj)


def export_items(export_dir, deserializer):
    """Items of the export in manifest order, deserialized the way boto3 does."""
    awsdynamodb = os.path.dirname(os.path.abspath(export_dir))
    with open(os.path.join(export_dir, "manifest-files.json")) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    for entry in entries:
        key = entry["dataFileS3Key"]
        path = os.path.join(awsdynamodb, key[key.index("AWSDynamoDB/") + len("AWSDynamoDB/"):])
        if os.path.getsize(path) == 0:
            continue
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                typed = json.loads(line)["Item"]
                # An export holds binary as base64 text; TypeDeserializer wants the bytes.
                yield {name: deserializer.deserialize(fix_binary(value)) for name, value in typed.items()}


def fix_binary(value):
    (descriptor, inner), = value.items()
    if descriptor == "B":
        return {"B": base64.b64decode(inner)}
    if descriptor == "BS":
        return {"BS": [base64.b64decode(b) for b in inner]}
    if descriptor == "M":
        return {"M": {k: fix_binary(v) for k, v in inner.items()}}
    if descriptor == "L":
        return {"L": [fix_binary(v) for v in inner]}
    return value


def main():
    parser = argparse.ArgumentParser(description="the migration guide's import: one INSERT per item")
    parser.add_argument("--export", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--key", required=True, help="key attributes, pk[,sk]")
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--table", default="guide_items")
    args = parser.parse_args()
    keys = [k.split(":")[0] for k in args.key.split(",") if k]
    deserializer = Deserializer()

    started = time.monotonic()
    conn = psycopg2.connect(args.target)
    cursor = conn.cursor()
    columns = [sql.Identifier(k) for k in keys]
    cursor.execute(
        sql.SQL("CREATE TABLE {} ({}, item JSONB NOT NULL, PRIMARY KEY ({}))").format(
            sql.Identifier(args.table),
            sql.SQL(", ").join(sql.SQL("{} TEXT NOT NULL").format(c) for c in columns),
            sql.SQL(", ").join(columns),
        )
    )
    insert = sql.SQL("INSERT INTO {} ({}, item) VALUES ({}, %s::jsonb)").format(
        sql.Identifier(args.table),
        sql.SQL(", ").join(columns),
        sql.SQL(", ").join(sql.Placeholder() for _ in keys),
    )
    loaded = 0
    for item in export_items(args.export, deserializer):
        if loaded >= args.items:
            break
        rest = {k: v for k, v in item.items() if k not in keys}
        cursor.execute(insert, [str(item[k]) for k in keys] + [json.dumps(rest, cls=DecimalEncoder)])
        loaded += 1
    conn.commit()
    seconds = time.monotonic() - started
    conn.close()
    print(json.dumps({"items": loaded, "seconds": seconds}))


if __name__ == "__main__":
    main()

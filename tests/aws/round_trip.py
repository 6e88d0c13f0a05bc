#!/usr/bin/env python3
"""Compares two sets of DynamoDB JSON items, without Ferry: a DynamoDB export (its data/*.json.gz)
and what `ferry-coordinator export-back` wrote from the tables it was loaded into
(`tests/tests/aws_shaped.rs`).

Items are matched by (PK, SK) and compared attribute by attribute, with what DynamoDB itself
treats as equal taken as equal: numbers by decimal value (`12.50` is `12.5`), sets in any order.
Everything else must be identical: types (a set is not a list, binary is not a string), strings,
binary, nesting.

usage: round_trip.py EXPORT_DIR EXPORT_BACK_DIR
Prints one JSON line: {"source": N, "exported": M, "differences": D, "first": [...]}; exits 1
when D > 0.
"""

import glob
import gzip
import json
import os
import sys
from decimal import Decimal


def norm(typed):
    (kind, body), = typed.items()
    if kind == "N":
        return ("N", Decimal(body))
    if kind == "NS":
        return ("NS", tuple(sorted(Decimal(n) for n in body)))
    if kind in ("SS", "BS"):
        return (kind, tuple(sorted(body)))
    if kind == "M":
        return ("M", tuple(sorted((k, norm(v)) for k, v in body.items())))
    if kind == "L":
        return ("L", tuple(norm(v) for v in body))
    if kind in ("S", "B", "BOOL", "NULL"):
        return (kind, body)
    raise SystemExit(f"unknown DynamoDB type {kind}")


def items(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "data", "*.json.gz"))):
        if os.path.getsize(path) == 0:
            continue
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                item = json.loads(line)["Item"]
                key = (item["PK"]["S"], item["SK"]["S"])
                if key in out:
                    raise SystemExit(f"{path}:{number}: key {key} twice")
                out[key] = {name: norm(value) for name, value in item.items()}
    return out


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    source, exported = items(sys.argv[1]), items(sys.argv[2])
    differences = []
    for key in sorted(source.keys() | exported.keys()):
        a, b = source.get(key), exported.get(key)
        if a == b:
            continue
        if a is None or b is None:
            differences.append(f"{key}: only in the {'export-back' if a is None else 'export'}")
            continue
        for name in sorted(a.keys() | b.keys()):
            if a.get(name) != b.get(name):
                differences.append(f"{key} {name!r}: export {a.get(name)!r:.200}, export-back {b.get(name)!r:.200}")
    print(json.dumps({"source": len(source), "exported": len(exported), "differences": len(differences), "first": differences[:20]}))
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The rows `tests/aws/storefront-routing.toml` must give for an export written by
`scripts/make-aws-export.py`, computed without Ferry: an independent reader for the routed test
(`tests/tests/aws_shaped.rs`).

It reads the export as AWS documents it (manifest-files.json, gzip JSON lines of typed items)
with Python's own json and gzip, and applies that one config's rules as written out by hand
below, from the routing rules' documentation (shared/src/schema/routing.rs): first matching rule wins,
columns from attributes or paths inside maps, regex captures, casts that never round, the rest
of the item (less what columns take whole and what `drop` names) as plain JSON, `skip_when`
filters, rejects for values that do not cast. It models only what this config and that
generator need: anything else (an attribute of a type a column does not expect here) stops it
with an error, so a new shape in the generator cannot pass unchecked.

usage: expected_routed.py EXPORT_DIR [--decimal96]
With --decimal96, NUMERIC holds what HeliosDB's does (a 96-bit decimal: digits below 2^96, at most
28 after the point), and an item with a number that does not fit is a reject.
Prints JSON lines: {"table": T, "key": [PK, SK], "row": {column: value}} for every row,
{"reject": [PK, SK]} for every rejected item, and last {"filtered": N}. Values: text as strings,
integers, numerics and floats as their decimal text in strings, booleans as JSON booleans,
bytea as "\\x" + hex, arrays as lists, timestamptz as epoch microseconds in a string, JSONB as
the JSON itself (numbers written with their exact digits).
"""

import base64
import datetime
import gzip
import json
import os
import re
import sys
from decimal import Decimal


class Reject(Exception):
    pass


DECIMAL96 = False


def fits_target(text):
    """Whether the target's NUMERIC holds the number exactly."""
    if not DECIMAL96:
        return True
    plain_text = canonical(text).lstrip("-")
    whole, _, frac = plain_text.partition(".")
    return len(frac) <= 28 and int(whole + frac) < 2**96


class Num:
    """A number inside expected JSON, written with its exact digits."""

    def __init__(self, text):
        self.text = text


def dump(value):
    if isinstance(value, Num):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + dump(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def plain(typed):
    """The plain JSON of a typed value: sets as arrays, binary as its base64 text."""
    (kind, body), = typed.items()
    if kind == "S":
        return body
    if kind == "N":
        return Num(body)
    if kind == "B":
        return body
    if kind == "BOOL":
        return body
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: plain(v) for k, v in body.items()}
    if kind == "L":
        return [plain(v) for v in body]
    if kind == "SS" or kind == "BS":
        return list(body)
    if kind == "NS":
        return [Num(n) for n in body]
    raise SystemExit(f"unknown DynamoDB type {kind}")


def canonical(text):
    """A number's plain decimal text, every digit kept (1.50 stays 1.50), zero unsigned."""
    value = Decimal(text)
    out = format(value, "f")
    if value == 0:
        out = out.lstrip("-")
    return out


def value_at(item, path):
    """The typed value at `path` (attribute, then keys of maps), or None when absent."""
    value = item.get(path[0])
    for key in path[1:]:
        if value is None or "M" not in value:
            return None
        value = value["M"].get(key)
    return value


def kind_of(typed):
    (kind, _), = typed.items()
    return kind


def col_text(typed, required=False):
    if typed is None or kind_of(typed) == "NULL":
        if required:
            raise Reject("required")
        return None
    if kind_of(typed) == "S":
        return typed["S"]
    if kind_of(typed) == "N":
        return canonical(typed["N"])
    raise SystemExit(f"text column from {kind_of(typed)}: not modelled")


def col_int(typed, bits, regex=None, low=None, high=None, required=False):
    if typed is None or kind_of(typed) == "NULL":
        if required:
            raise Reject("required")
        return None
    if regex is not None:
        match = re.search(regex, typed["S"])
        if match is None:
            raise Reject("regex")
        text = match.group(1)
    elif kind_of(typed) == "N":
        text = typed["N"]
    else:
        raise SystemExit(f"integer column from {kind_of(typed)}: not modelled")
    value = Decimal(text)
    if value != value.to_integral_value():
        raise Reject("not an integer")
    value = int(value)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise Reject("out of range")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Reject("outside bounds")
    return str(value)


def col_numeric(typed, precision=None, scale=None):
    if typed is None or kind_of(typed) == "NULL":
        return None
    if kind_of(typed) != "N":
        raise SystemExit(f"numeric column from {kind_of(typed)}: not modelled")
    value = Decimal(typed["N"])
    if precision is not None:
        exponent = value.normalize().as_tuple().exponent if value != 0 else 0
        if -exponent > scale:
            raise Reject("would round")
        if abs(value) >= Decimal(10) ** (precision - scale):
            raise Reject("too many integer digits")
    if not fits_target(typed["N"]):
        raise Reject("does not fit the target's NUMERIC")
    return canonical(typed["N"])


def col_float(typed):
    if typed is None or kind_of(typed) == "NULL":
        return None
    return repr(float(Decimal(typed["N"])))


def col_bool(typed):
    if typed is None or kind_of(typed) == "NULL":
        return None
    if kind_of(typed) != "BOOL":
        raise SystemExit(f"boolean column from {kind_of(typed)}: not modelled")
    return typed["BOOL"]


def col_bytea(typed):
    if typed is None or kind_of(typed) == "NULL":
        return None
    if kind_of(typed) != "B":
        raise SystemExit(f"bytea column from {kind_of(typed)}: not modelled")
    return "\\x" + base64.b64decode(typed["B"]).hex()


def col_time(typed):
    if typed is None or kind_of(typed) == "NULL":
        return None
    if kind_of(typed) != "S":
        raise SystemExit(f"timestamptz column from {kind_of(typed)}: not modelled")
    try:
        moment = datetime.datetime.fromisoformat(typed["S"])
    except ValueError:
        raise Reject("not a time")
    if moment.tzinfo is None:
        raise SystemExit(f"time without offset {typed['S']}: not modelled")
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return str((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def col_text_array(typed):
    if typed is None or kind_of(typed) == "NULL":
        return None
    if kind_of(typed) != "SS":
        raise SystemExit(f"text[] column from {kind_of(typed)}: not modelled")
    return list(typed["SS"])


def col_numeric_array(typed):
    if typed is None or kind_of(typed) == "NULL":
        return None
    if kind_of(typed) != "NS":
        raise SystemExit(f"numeric[] column from {kind_of(typed)}: not modelled")
    if not all(fits_target(n) for n in typed["NS"]):
        raise Reject("does not fit the target's NUMERIC")
    return [canonical(n) for n in typed["NS"]]


def col_json(typed):
    if typed is None or kind_of(typed) == "NULL":
        return None
    return plain(typed)


def rest(item, taken):
    left = {name: plain(value) for name, value in item.items() if name not in taken}
    return left if left else None


def customers(item):
    pk = item["PK"]
    return {
        "id": col_int(pk, 64, regex=r"^CUSTOMER#(\d+)$"),
        "dynamo_pk": col_text(pk),
        "dynamo_sk": col_text(item["SK"]),
        "name": col_text(item.get("name"), required=True),
        "email": None if col_text(item.get("email")) is None else col_text(item.get("email")).strip().lower(),
        "phones": col_text_array(item.get("phone numbers")),
        "phones_json": col_json(item.get("phone numbers")),
        "lifetime": col_text(item.get("lifetime value")),
        "created": col_time(item.get("créé le")),
        "avatar": col_bytea(item.get("avatar")),
        "opt_in": col_bool(item.get("marketing opt-in")),
        "deleted_at": col_text(item.get("deleted_at")),
        "language": col_text(value_at(item, ["preferences", "language"])),
        "lucky": col_numeric_array(item.get("lucky numbers")),
        "loyalty": col_text(item.get("loyalty.tier")),
        "extra": rest(item, {"PK", "SK", "name", "email", "phone numbers", "lifetime value", "créé le",
                             "avatar", "marketing opt-in", "deleted_at", "lucky numbers", "loyalty.tier"}),
    }


def orders(item):
    return {
        "customer_id": col_int(item["PK"], 32, regex=r"^CUSTOMER#(\d+)$"),
        "seq": col_int(item["SK"], 32, regex=r"^ORDER#.*#(\d+)$"),
        "dynamo_pk": col_text(item["PK"]),
        "dynamo_sk": col_text(item["SK"]),
        "status": col_text(item.get("status"), required=True),
        "total": col_numeric(item.get("total"), 14, 2),
        "total_text": col_text(item.get("total")),
        "currency": col_text(item.get("currency")),
        "lines": col_json(item.get("lines")),
        "city": col_text(value_at(item, ["shipping", "address", "city"])),
        "lat": col_numeric(value_at(item, ["shipping", "address", "geo", "lat"]), 9, 6),
        "placed": col_time(item.get("GSI1SK")),
        "tax": col_float(item.get("tax.rate")),
        "ledger": col_json(item.get("ledger id")),
        "extra": rest(item, {"PK", "SK", "status", "total", "currency", "lines", "GSI1SK", "tax.rate",
                             "ledger id", "GSI1PK"}),
    }


def products(item):
    return {
        "dynamo_pk": col_text(item["PK"]),
        "dynamo_sk": col_text(item["SK"]),
        "title": col_text(item.get("title")),
        "description": col_text(item.get("description")),
        "price": col_numeric(item.get("price"), 10, 2),
        "categories": col_text_array(item.get("categories")),
        "barcode": col_int(item.get("barcode"), 64),
        "rating": col_numeric(item.get("rating.avg")),
        "depth": col_numeric(value_at(item, ["dimensions (cm)", "d"])),
        "extra": rest(item, {"PK", "SK", "title", "description", "price", "categories", "barcode",
                             "rating.avg"}),
    }


def reviews(item):
    return {
        "customer_id": col_int(item["SK"], 64, regex=r"^REVIEW#(\d+)#\d+$"),
        "dynamo_pk": col_text(item["PK"]),
        "dynamo_sk": col_text(item["SK"]),
        "rating": col_int(item.get("rating"), 16, low=1, high=4, required=True),
        "body": col_text(item.get("body")),
        "verified": col_bool(item.get("verified purchase")),
        "extra": rest(item, {"PK", "SK", "rating", "body", "verified purchase"}),
    }


def starts(item, name, prefix):
    value = item.get(name)
    return value is not None and kind_of(value) == "S" and value["S"].startswith(prefix)


def route(item):
    """(table, row), ("filtered", None), or raises Reject."""
    if starts(item, "PK", "CUSTOMER#") and starts(item, "SK", "PROFILE"):
        return "customers", customers(item)
    if starts(item, "PK", "CUSTOMER#") and starts(item, "SK", "ORDER#"):
        if item.get("status") == {"S": "CANCELLED"}:
            return "filtered", None
        return "orders", orders(item)
    if starts(item, "PK", "PRODUCT#") and starts(item, "SK", "METADATA"):
        return "products", products(item)
    if starts(item, "PK", "PRODUCT#") and re.search(r"^REVIEW#\d+#\d+$", item["SK"]["S"]):
        return "reviews", reviews(item)
    raise Reject("no rule")


def main():
    global DECIMAL96
    export = sys.argv[1]
    DECIMAL96 = sys.argv[2:] == ["--decimal96"]
    if sys.argv[2:] not in ([], ["--decimal96"]):
        raise SystemExit(__doc__)
    if not os.path.exists(os.path.join(export, "manifest-files.json")):
        raise SystemExit(f"no manifest-files.json in {export}")
    filtered = 0
    out = sys.stdout
    with open(os.path.join(export, "manifest-files.json")) as f:
        files = [json.loads(line) for line in f if line.strip()]
    for entry in files:
        # dataFileS3Key is the bucket's key; the file is in the export folder's data/.
        name = os.path.join(export, "data", os.path.basename(entry["dataFileS3Key"]))
        with gzip.open(name, "rt", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                item = json.loads(line)["Item"]
                key = [item["PK"]["S"], item["SK"]["S"]]
                try:
                    table, row = route(item)
                except Reject:
                    out.write(dump({"reject": key}) + "\n")
                    continue
                if table == "filtered":
                    filtered += 1
                    continue
                out.write(dump({"table": table, "key": key, "row": row}) + "\n")
    out.write(json.dumps({"filtered": filtered}) + "\n")


if __name__ == "__main__":
    main()

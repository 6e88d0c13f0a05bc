#!/usr/bin/env python3
"""Builds a DynamoDB table's history and writes it the way DynamoDB exports it, for Ferry's
catch-up tests: a full export at T0, three incremental exports [T0,T1), [T1,T2), [T2,T3) in the
documented layout (manifests per export, data files in the shared AWSDynamoDB/data/ folder, change
records of Metadata/Keys/NewImage/OldImage), and a full export of the final state (the oracle).

Items are typed by boto3's own TypeSerializer (the code AWS's SDK uses), not by Ferry: odd
attribute names, string/number/binary sets, deep maps, 38-digit numbers, a 350 KB string.

The history (single-table design: USER#<id>/PROFILE users and USER#<id>/ORDER#<n> orders):
inserts, updates, deletes, orders moving between the "orders" and "archived orders" routing rules
(their status), users deleted with their orders, an email moving from one user to another inside a
window (a unique constraint violated for a moment), an item inserted then deleted inside a window
(no record), and one deleted then re-created (an update). Window 1 and 3 use the NEW_AND_OLD_IMAGES
view, window 2 the NEW_IMAGE view (spelled NEW_IMAGES, as the API text does) written as Amazon Ion.

usage: make_history.py ROOT [--users N] [--seed S]
Also writes, for the refusal tests: ROOT/cdc-again (window 1 exported again under another id) and
ROOT/cdc-overlap (a window overlapping window 1).
"""

import argparse
import base64
import copy
import decimal
import gzip
import hashlib
import json
import os
import random
from decimal import Decimal

from boto3.dynamodb.types import Binary, TypeSerializer

SERIALIZER = TypeSerializer()
ACCOUNT = "111122223333"
TABLE = "ShopTable"
TABLE_ARN = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/{TABLE}"
HOUR_MS = 3_600_000
T0_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z


def iso(ms):
    import datetime

    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def typed(item):
    """boto3's typing of an item, with binary as the base64 text exports hold."""

    def fix(value):
        if isinstance(value, dict):
            # Set element order is arbitrary in DynamoDB; sorted here so the windows and the
            # final export (serialized from different copies) agree on it.
            if len(value) == 1 and next(iter(value)) in ("SS", "NS", "BS"):
                (descriptor, elements), = value.items()
                elements = [fix(e) for e in elements]
                key = (lambda n: Decimal(n)) if descriptor == "NS" else None
                return {descriptor: sorted(elements, key=key)}
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, (Binary, bytes, bytearray)):
            raw = value.value if isinstance(value, Binary) else bytes(value)
            return base64.b64encode(raw).decode()
        return value

    return {name: fix(SERIALIZER.serialize(value)) for name, value in item.items()}


# ---- Ion text, written by hand from the typed values (the exporter's conventions) ----


def ion_string(text):
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def ion_symbol(name):
    escaped = name.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def ion_decimal(text):
    """DynamoDB number text as an Ion decimal the way exports write them: integers with a
    trailing point (103.), trailing zeros moved into a d exponent (6d2), fractions as digits with
    a negative d exponent (4999d-2)."""
    d = Decimal(text)
    sign, digits, exponent = d.as_tuple()
    coefficient = "".join(map(str, digits)).lstrip("0") or "0"
    prefix = "-" if sign else ""
    if exponent == 0 and coefficient != "0" and coefficient.endswith("0"):
        stripped = coefficient.rstrip("0")
        return f"{prefix}{stripped}d{len(coefficient) - len(stripped)}"
    if exponent == 0:
        return f"{prefix}{coefficient}."
    return f"{prefix}{coefficient}d{exponent}"


def ion_value(value):
    (descriptor, inner), = value.items()
    if descriptor == "S":
        return ion_string(inner)
    if descriptor == "N":
        return ion_decimal(inner)
    if descriptor == "B":
        return "{{" + inner + "}}"
    if descriptor == "BOOL":
        return "true" if inner else "false"
    if descriptor == "NULL":
        return "null"
    if descriptor == "M":
        return "{" + ",".join(f"{ion_symbol(k)}:{ion_value(v)}" for k, v in inner.items()) + "}"
    if descriptor == "L":
        return "[" + ",".join(ion_value(v) for v in inner) + "]"
    if descriptor == "SS":
        return "$dynamodb_SS::[" + ",".join(ion_string(s) for s in inner) + "]"
    if descriptor == "NS":
        return "$dynamodb_NS::[" + ",".join(ion_decimal(n) for n in inner) + "]"
    if descriptor == "BS":
        return "$dynamodb_BS::[" + ",".join("{{" + b + "}}" for b in inner) + "]"
    raise ValueError(descriptor)


def ion_struct(typed_attributes):
    return "{" + ",".join(f"{ion_symbol(k)}:{ion_value(v)}" for k, v in typed_attributes.items()) + "}"


def ion_line(record):
    fields = []
    for name, value in record.items():
        if name == "Metadata":
            micros = value["WriteTimestampMicros"]["N"]
            fields.append(f"Metadata:{{WriteTimestampMicros:{micros}.}}")
        else:
            fields.append(f"{name}:{ion_struct(value)}")
    return "$ion_1_0 {" + ",".join(fields) + "}"


# ---- the table ----


class Shop:
    def __init__(self, rng):
        self.rng = rng
        self.items = {}  # (PK, SK) -> item (python values)
        self.next_user = 1000
        self.next_order = 1
        self.emails = set()

    def email(self):
        while True:
            e = f"user{self.rng.randrange(10**9)}@example.com"
            if e not in self.emails:
                self.emails.add(e)
                return e

    def new_user(self):
        uid = self.next_user
        self.next_user += 1
        rng = self.rng
        item = {
            "PK": f"USER#{uid}",
            "SK": "PROFILE",
            "name": rng.choice(["Ada", "Grace", "Zoë Ünïcode", 'quote "me"', "tab\there", "line\nbreak"]) + f" {uid}",
            "email": self.email(),
            "status": rng.choice(["active", "inactive"]),
            "created_at": iso(T0_MS - rng.randrange(10**9)),
            "tags": set(rng.sample(["red", "green", "blue", "vip", "new", "ünï"], rng.randrange(1, 4))),
            "scores": {Decimal(rng.randrange(1, 10**6)) / Decimal(100), Decimal("12345678901234567890123456789012345678")},
            "avatar": Binary(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))),
            "prefs": deep_map(rng, 6),
            "attr.with.dots": "dotted",
            "with space": Decimal("-0.000000000000000000000000000000000001"),
            "ünïcode näme": "x",
            "note": None,
            "active": rng.random() < 0.5,
        }
        if uid % 7 == 0:
            item["keys"] = {Binary(b"\x00\x01"), Binary(b"\xff")}
        self.items[(item["PK"], item["SK"])] = item
        return item

    def new_order(self, uid):
        n = self.next_order
        self.next_order += 1
        rng = self.rng
        item = {
            "PK": f"USER#{uid}",
            "SK": f"ORDER#{n:06d}",
            "total": Decimal(rng.randrange(100, 10**8)) / Decimal(100),
            "status": rng.choice(["pending", "shipped", "archived"]),
            "items": [{"sku": f"SKU-{rng.randrange(999)}", "qty": Decimal(rng.randrange(1, 9))} for _ in range(rng.randrange(1, 4))],
            "big": Decimal(rng.randrange(10**37, 10**38)),
            "tiny": Decimal("1E-130"),
        }
        self.items[(item["PK"], item["SK"])] = item
        return item

    def users(self):
        return [k for k in self.items if k[1] == "PROFILE"]

    def orders_of(self, pk):
        return [k for k in self.items if k[0] == pk and k[1].startswith("ORDER#")]

    def orders(self):
        return [k for k in self.items if k[1].startswith("ORDER#")]


def deep_map(rng, depth):
    value = {"leaf": Decimal(rng.randrange(1000)), "s": "deep", "l": [Decimal("1.50"), "x", {"k": "v"}]}
    for level in range(depth):
        value = {f"level{level}": value, "n": Decimal(level)}
    return value


def user_pk_number(pk):
    return int(pk.split("#")[1])


# ---- writing exports ----


def write_gzip(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = "".join(line + "\n" for line in lines).encode()
    data = gzip.compress(raw, mtime=0)
    with open(path, "wb") as f:
        f.write(data)
    return data


def write_manifests(export_dir, summary, files_lines):
    os.makedirs(export_dir, exist_ok=True)
    files_text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in files_lines).encode()
    summary_text = json.dumps(summary, separators=(",", ":")).encode()
    for name, data in [("manifest-files", files_text), ("manifest-summary", summary_text)]:
        with open(os.path.join(export_dir, name + ".json"), "wb") as f:
            f.write(data)
        with open(os.path.join(export_dir, name + ".md5"), "w") as f:
            f.write(md5_b64(data))
    open(os.path.join(export_dir, "_started"), "wb").close()


def file_name(rng, first=None):
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    name = "".join(rng.choice(alphabet) for _ in range(26))
    return (first + name[1:]) if first else name


def spread(rng, lines, files, pinned=None):
    """Spreads lines over `files` files at random (as partitions do); `pinned` lines go to the
    first (index 0) or last file, so the tests know their order."""
    buckets = [[] for _ in range(files)]
    for line in lines:
        buckets[rng.randrange(files)].append(line)
    for index, line in pinned or []:
        buckets[index].append(line)
    return buckets


def full_export(root, prefix, export_id, export_ms, items, rng, files=3):
    base = os.path.join(root, prefix, "AWSDynamoDB", export_id)
    lines = [json.dumps({"Item": typed(item)}, separators=(",", ":"), ensure_ascii=False) for item in items]
    buckets = spread(rng, lines, files) + [[]]
    files_lines = []
    for bucket in buckets:
        name = file_name(rng) + ".json.gz"
        key = f"{prefix}/AWSDynamoDB/{export_id}/data/{name}"
        data = write_gzip(os.path.join(base, "data", name), bucket)
        files_lines.append({"itemCount": len(bucket), "md5Checksum": md5_b64(data), "etag": hashlib.md5(data).hexdigest() + "-1", "dataFileS3Key": key})
    summary = {
        "version": "2020-06-30",
        "exportArn": f"{TABLE_ARN}/export/{export_id}",
        "startTime": iso(export_ms + 60_000),
        "endTime": iso(export_ms + 600_000),
        "tableArn": TABLE_ARN,
        "tableId": "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9",
        "exportTime": iso(export_ms),
        "s3Bucket": "shop-exports",
        "s3Prefix": prefix,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{prefix}/AWSDynamoDB/{export_id}/manifest-files.json",
        "billedSizeBytes": sum(len(l) for l in lines),
        "itemCount": len(lines),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }
    write_manifests(base, summary, files_lines)
    return base


def change_records(before, after, view, micros):
    records = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old is None and new is None:
            continue
        if old == new:
            continue
        keys = typed({"PK": key[0], "SK": key[1]})
        record = {"Metadata": {"WriteTimestampMicros": {"N": str(micros + len(records))}}, "Keys": keys}
        if new is not None:
            record["NewImage"] = typed(new)
        if view == "NEW_AND_OLD_IMAGES" and old is not None:
            record["OldImage"] = typed(old)
        records.append((key, record))
    return records


def incremental_export(root, prefix, export_id, from_ms, to_ms, records, view, view_spelling, ion, rng, pinned_first=(), pinned_last=()):
    base = os.path.join(root, prefix, "AWSDynamoDB", export_id)
    shared = os.path.join(root, prefix, "AWSDynamoDB", "data")
    render = (lambda r: ion_line(r)) if ion else (lambda r: json.dumps(r, separators=(",", ":"), ensure_ascii=False))
    free = [render(r) for k, r in records if k not in pinned_first and k not in pinned_last]
    pinned = [(0, render(r)) for k, r in records if k in pinned_first] + [(2, render(r)) for k, r in records if k in pinned_last]
    buckets = spread(rng, free, 3, pinned) + [[]]
    ext = ".ion.gz" if ion else ".json.gz"
    files_lines = []
    for index, bucket in enumerate(buckets):
        # File names sort as the buckets do: "a…" first, "z…" last (the loaders take shards in order).
        first = "a" if index == 0 else ("z" if index == 2 else None)
        name = file_name(rng, first) + ext
        data = write_gzip(os.path.join(shared, name), bucket)
        files_lines.append({"itemCount": len(bucket), "md5Checksum": md5_b64(data), "etag": hashlib.md5(data).hexdigest() + "-1", "dataFileS3Key": f"{prefix}/AWSDynamoDB/data/{name}"})
    summary = {
        "version": "2023-08-01",
        "exportArn": f"{TABLE_ARN}/export/{export_id}",
        "startTime": iso(to_ms + 60_000),
        "endTime": iso(to_ms + 300_000),
        "tableArn": TABLE_ARN,
        "tableId": "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9",
        "exportFromTime": iso(from_ms),
        "exportToTime": iso(to_ms),
        "s3Bucket": "shop-exports",
        "s3Prefix": prefix,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{prefix}/AWSDynamoDB/{export_id}/manifest-files.json",
        "billedSizeBytes": 1024,
        "itemCount": len(records),
        "outputFormat": "ION" if ion else "DYNAMODB_JSON",
        "outputView": view_spelling,
        "exportType": "INCREMENTAL_EXPORT",
    }
    write_manifests(base, summary, files_lines)
    return base


def export_id(ms, rng):
    return f"{ms:014d}-{rng.randrange(16**8):08x}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    decimal.getcontext().prec = 60
    rng = random.Random(args.seed)
    shop = Shop(rng)
    for _ in range(args.users):
        user = shop.new_user()
        for _ in range(rng.randrange(0, 5)):
            shop.new_order(user_pk_number(user["PK"]))
    # One 350 KB string.
    first_user = shop.users()[0]
    shop.items[first_user]["bio"] = "".join(rng.choice("abcdefghij ünï\"\\") for _ in range(350_000))
    stats = {"windows": []}
    state0 = copy.deepcopy(shop.items)
    full_id = export_id(T0_MS, rng)
    full_export(args.root, "full", full_id, T0_MS, list(state0.values()), rng)
    stats["full"] = {"export_id": full_id, "items": len(state0)}

    views = [("NEW_AND_OLD_IMAGES", "NEW_AND_OLD_IMAGES", False), ("NEW_IMAGE", "NEW_IMAGES", True), ("NEW_AND_OLD_IMAGES", "NEW_AND_OLD_IMAGES", False)]
    window_ids = []
    before = state0
    for w in range(3):
        from_ms, to_ms = T0_MS + w * HOUR_MS, T0_MS + (w + 1) * HOUR_MS
        ops = {"updates": 0, "inserts": 0, "deletes": 0, "moves": 0}
        users = shop.users()
        # Updates: users' names, statuses and scores; orders' totals and statuses (archived moves rules).
        for key in rng.sample(users, max(1, len(users) // 6)):
            item = shop.items[key]
            item["name"] = item["name"] + " (v2)"
            item["status"] = "inactive" if item["status"] == "active" else "active"
            item["scores"] = {Decimal(rng.randrange(1, 10**6)) / Decimal(1000)}
            ops["updates"] += 1
        for key in rng.sample(shop.orders(), max(1, len(shop.orders()) // 5)):
            item = shop.items[key]
            old = item["status"]
            item["status"] = "archived" if old != "archived" else "shipped"
            item["total"] = Decimal(rng.randrange(100, 10**8)) / Decimal(100)
            ops["moves"] += 1
            ops["updates"] += 1
        # Inserts: new users with orders, new orders of existing users.
        for _ in range(max(1, args.users // 10)):
            user = shop.new_user()
            ops["inserts"] += 1
            for _ in range(rng.randrange(0, 3)):
                shop.new_order(user_pk_number(user["PK"]))
                ops["inserts"] += 1
        for key in rng.sample(users, max(1, len(users) // 8)):
            shop.new_order(user_pk_number(key[0]))
            ops["inserts"] += 1
        # Deletes: orders, and users with all their orders.
        for key in rng.sample(shop.orders(), max(1, len(shop.orders()) // 12)):
            del shop.items[key]
            ops["deletes"] += 1
        survivors = [k for k in shop.users() if k != first_user]
        for key in rng.sample(survivors, max(1, len(survivors) // 20)):
            for order in shop.orders_of(key[0]):
                del shop.items[order]
            del shop.items[key]
            ops["deletes"] += 1
        # Inserted then deleted inside the window: no record.
        ghost = shop.new_user()
        del shop.items[(ghost["PK"], ghost["SK"])]
        # Deleted then created again inside the window: an update.
        reborn_key = rng.choice([k for k in shop.users() if k != first_user])
        reborn = shop.items[reborn_key]
        reborn["name"] = "reborn " + reborn["name"]
        reborn.pop("prefs", None)
        # An email moves: A takes a new one, B takes A's old one (B's record in the first file, A's
        # in the last: applied in file order, B meets A's old value first).
        a_key, b_key = rng.sample([k for k in shop.users() if k not in (first_user, reborn_key) and k in before], 2)
        old_email = shop.items[a_key]["email"]
        shop.items[a_key]["email"] = shop.email()
        shop.items[b_key]["email"] = old_email
        after = copy.deepcopy(shop.items)
        view, spelling, ion = views[w]
        records = change_records(before, after, view, from_ms * 1000 + 17)
        wid = export_id(to_ms + 60_000, rng)
        window_ids.append(wid)
        incremental_export(args.root, "cdc", wid, from_ms, to_ms, records, view, spelling, ion, rng, pinned_first={b_key}, pinned_last={a_key})
        stats["windows"].append({"export_id": wid, "from": iso(from_ms), "to": iso(to_ms), "records": len(records), "view": spelling, "ion": ion, "ops": ops, "email_move": [a_key[0], b_key[0]]})
        if w == 0:
            # The same window exported again (another id), and one overlapping it, for the refusals.
            again = export_id(to_ms + 120_000, rng)
            incremental_export(args.root, "cdc-again", again, from_ms, to_ms, records, view, spelling, False, random.Random(1))
            overlap = export_id(to_ms + 180_000, rng)
            incremental_export(args.root, "cdc-overlap", overlap, from_ms + HOUR_MS // 2, to_ms + HOUR_MS // 2, records[:5], view, spelling, False, random.Random(2))
            stats["again"] = again
            stats["overlap"] = overlap
        before = after

    final_id = export_id(T0_MS + 3 * HOUR_MS, rng)
    full_export(args.root, "final", final_id, T0_MS + 3 * HOUR_MS, list(shop.items.values()), rng)
    stats["final"] = {"export_id": final_id, "items": len(shop.items), "users": len(shop.users()), "orders": len(shop.orders()), "archived": sum(1 for k in shop.orders() if shop.items[k]["status"] == "archived")}
    with open(os.path.join(args.root, "history.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()

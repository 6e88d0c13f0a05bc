#!/usr/bin/env python3
"""Writes an AWS-shaped DynamoDB full export (DYNAMODB_JSON, gzip) of a single-table e-commerce
store, for scripts/bench: the shape Ferry was not tuned on.

Items are typed by boto3's own TypeSerializer (the code AWS's SDK uses), not by Ferry:
customers, orders, products and reviews in one table (PK, SK), with maps nested 3-4 levels,
lists of maps, string/number/binary sets, binary, 38-digit numbers, odd attribute names (spaces,
dots, '#', unicode), sparse attributes, and a few big strings (product descriptions of 100-300 KB).

The layout is the one DynamoDB writes (shared/docs/dynamodb-export-format.md, section 1):
ROOT/<prefix>/AWSDynamoDB/<ExportId>/{_started, manifest-summary.json, manifest-summary.md5,
manifest-files.json, manifest-files.md5, data/<26 base32 chars>.json.gz}; items go to the data
file of their partition key's hash (one file per partition, one of them empty), each file's
itemCount, base64 MD5 of its gzip bytes and multipart-style etag in manifest-files.json (JSON
lines), the .md5 files holding the base64 MD5 of the manifests' exact bytes (no newline).

usage: make-aws-export.py ROOT [--items N] [--files F] [--seed S]
Prints one JSON line: {"export_dir": ..., "items": ..., "files": ..., "gzip_bytes": ...}.
"""

import argparse
import base64
import datetime
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
TABLE = "Storefront"
TABLE_ARN = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/{TABLE}"
PREFIX = "exports/storefront"
EXPORT_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z

CITIES = ["Zürich", "São Paulo", "Kraków", "東京", "Reykjavík", "Lyon", "Austin", "Cape Town", "Oslo", "Seoul"]
WORDS = ["ultra", "light", "organic", "steel", "linen", "café", "nordic", "smart", "über", "classic", "eco", "pro"]
COLORS = ["red", "green", "blue", "black", "white", "sand", "olive", "rosé"]
CARRIERS = ["UPS", "DHL", "La Poste", "USPS", "Yamato"]
STATUSES = ["PENDING", "PAID", "SHIPPED", "DELIVERED", "RETURNED", "CANCELLED"]


def iso(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def typed(item):
    """boto3's typing of an item, with binary as the base64 text exports hold."""

    def fix(value):
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, (Binary, bytes, bytearray)):
            raw = value.value if isinstance(value, Binary) else bytes(value)
            return base64.b64encode(raw).decode()
        return value

    return {name: fix(SERIALIZER.serialize(value)) for name, value in item.items()}


def money(rng, low, high):
    return Decimal(rng.randrange(low * 100, high * 100)) / Decimal(100)


def big38(rng):
    return Decimal(rng.randrange(10**37, 10**38))


def blob(rng, low, high):
    return Binary(bytes(rng.randrange(256) for _ in range(rng.randrange(low, high))))


def text(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words))


def address(rng):
    return {
        "street": f"{rng.randrange(1, 999)} {rng.choice(WORDS).title()} Street",
        "city": rng.choice(CITIES),
        "postal code": f"{rng.randrange(10000, 99999)}",
        "geo": {
            "lat": Decimal(rng.randrange(-90_000_000, 90_000_000)) / Decimal(1_000_000),
            "lon": Decimal(rng.randrange(-180_000_000, 180_000_000)) / Decimal(1_000_000),
            "source": {"provider": rng.choice(["gps", "ip", "manual"]), "accuracy m": Decimal(rng.randrange(1, 500))},
        },
    }


def customer(rng, cid):
    item = {
        "PK": f"CUSTOMER#{cid:08d}",
        "SK": "PROFILE",
        "entity": "customer",
        "name": rng.choice(["Zoë Ünïcode", "Ada", 'quote "me"', "José Ñúñez", "李雷", "tab\there"]) + f" {cid}",
        "email": f"c{cid}@example.com",
        "phone numbers": {f"+41 79 {rng.randrange(1000000, 9999999)}" for _ in range(rng.randrange(1, 3))},
        "addresses": {"home": address(rng), **({"work": address(rng)} if rng.random() < 0.3 else {})},
        "loyalty.tier": rng.choice(["bronze", "silver", "gold", "platinum"]),
        "#segments": set(rng.sample(["vip", "churn-risk", "new", "b2b", "ünï", "newsletter"], rng.randrange(1, 4))),
        "preferences": {
            "notifications": {"email": {"weekly": rng.random() < 0.5, "promos": rng.random() < 0.5}, "sms": {"enabled": rng.random() < 0.2}},
            "language": rng.choice(["de-CH", "en-US", "pt-BR", "ja-JP"]),
        },
        "lifetime value": big38(rng),
        "créé le": iso(EXPORT_MS - rng.randrange(10**11)),
        "avatar": blob(rng, 8, 64),
        "marketing opt-in": rng.random() < 0.4,
        "deleted_at": None,
    }
    if cid % 9 == 0:
        item["device keys"] = {Binary(bytes([cid % 256, 1])), Binary(b"\xff\x00"), Binary(bytes(rng.randrange(256) for _ in range(16)))}
    if cid % 5 == 0:
        item["lucky numbers"] = {Decimal(rng.randrange(1, 100)) for _ in range(3)} | {Decimal("-0.000000000000000000000000000000000001")}
    return item


def order(rng, cid, n, skus):
    lines = []
    for _ in range(rng.randrange(1, 6)):
        line = {"sku": rng.choice(skus), "qty": Decimal(rng.randrange(1, 5)), "unit price": money(rng, 1, 400)}
        if rng.random() < 0.5:
            line["options"] = {"color": rng.choice(COLORS), "size": rng.choice(["S", "M", "L", "XL"]), "gift": {"wrap": rng.random() < 0.5, "note": text(rng, 4)}}
        lines.append(line)
    status = rng.choice(STATUSES)
    placed = EXPORT_MS - rng.randrange(10**10)
    item = {
        "PK": f"CUSTOMER#{cid:08d}",
        "SK": f"ORDER#{iso(placed)}#{n:06d}",
        "entity": "order",
        "status": status,
        "GSI1PK": f"STATUS#{status}",
        "GSI1SK": iso(placed),
        "total": sum((l["qty"] * l["unit price"] for l in lines), Decimal(0)),
        "currency": rng.choice(["CHF", "EUR", "USD", "JPY"]),
        "lines": lines,
        "shipping": {
            "address": address(rng),
            "carrier": rng.choice(CARRIERS),
            "tracking": [{"at": iso(placed + k * 3_600_000), "event": rng.choice(["label", "picked", "in transit", "out for delivery"])} for k in range(rng.randrange(0, 4))],
        },
        "payment": {"method": rng.choice(["card", "twint", "invoice"]), "card": {"brand": rng.choice(["visa", "mc"]), "last4": f"{rng.randrange(10000):04d}"}},
        "ledger id": big38(rng),
        "tax.rate": Decimal(rng.choice(["0.077", "0.081", "0.2", "0.1"])),
    }
    if rng.random() < 0.15:
        item["discount codes"] = set(rng.sample(["WELCOME10", "BLACKFRIDAY", "ÉTÉ", "FREESHIP"], rng.randrange(1, 3)))
    if rng.random() < 0.05:
        item["note"] = ""
    return item


def product(rng, sku, big):
    item = {
        "PK": f"PRODUCT#{sku}",
        "SK": "METADATA",
        "entity": "product",
        "title": f"{text(rng, 3).title()} {sku}",
        "description": text(rng, rng.randrange(20, 80)),
        "price": money(rng, 1, 2000),
        "dimensions (cm)": {"h": money(rng, 1, 200), "w": money(rng, 1, 200), "d": money(rng, 1, 200)},
        "categories": set(rng.sample(["home", "garden", "kitchen", "outdoor", "kids", "büro"], rng.randrange(1, 4))),
        "sizes": {Decimal(s) for s in rng.sample([36, 37, 38, 39, 40, 41, 42, 43, 44], rng.randrange(1, 5))},
        "thumbnails": {blob(rng, 16, 48) for _ in range(rng.randrange(1, 4))},
        "attributes": {"material": {"primary": rng.choice(WORDS), "certifications": {"oeko-tex": rng.random() < 0.5, "fsc": {"id": f"FSC-{rng.randrange(10**6)}"}}}},
        "inventory": {f"WH#{w}": {"on hand": Decimal(rng.randrange(0, 5000)), "bins": [f"{w}-{rng.randrange(100)}" for _ in range(rng.randrange(1, 3))]} for w in rng.sample(["ZRH", "FRA", "NRT"], rng.randrange(1, 4))},
        "rating.avg": Decimal(rng.randrange(10, 50)) / Decimal(10),
        "barcode": Decimal(rng.randrange(10**12, 10**13)),
    }
    if big:
        item["description"] = "".join(rng.choice("abcdefghij ünï\"\\\n") for _ in range(rng.randrange(100_000, 300_000)))
    return item


def review(rng, sku, cid, n):
    return {
        "PK": f"PRODUCT#{sku}",
        "SK": f"REVIEW#{cid:08d}#{n}",
        "entity": "review",
        "rating": Decimal(rng.randrange(1, 6)),
        "body": text(rng, rng.randrange(5, 60)),
        "verified purchase": rng.random() < 0.8,
        "helpful": {"yes": Decimal(rng.randrange(100)), "no": Decimal(rng.randrange(20))},
        "photos": [blob(rng, 8, 32) for _ in range(rng.randrange(0, 3))],
    }


def items(rng, total):
    """Customers with their orders and reviews, products among them (one item in 20): about 15%
    customers, 55% orders, 25% reviews and 5% products, mixed as a table's partitions are."""
    products = max(1, total // 20)
    skus = [f"SKU-{i:06d}" for i in range(products)]
    big_every = max(1, products // 4)  # four big descriptions
    produced = 0
    next_product = 0
    cid = 0
    n = 0

    def kinds():
        nonlocal cid
        cid += 1
        yield lambda: customer(rng, cid)
        for _ in range(rng.randrange(0, 8)):
            yield lambda: order(rng, cid, n, skus)
        for _ in range(rng.randrange(0, 4)):
            yield lambda: review(rng, rng.choice(skus), cid, n)

    while produced < total:
        for make in kinds():
            if produced >= total:
                return
            if next_product < products and produced * products >= next_product * total:
                yield product(rng, skus[next_product], big=(next_product % big_every == big_every // 2))
                next_product += 1
                produced += 1
                if produced >= total:
                    return
            n += 1
            yield make()
            produced += 1


def file_name(rng):
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(rng.choice(alphabet) for _ in range(26))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--files", type=int, default=8, help="data files with items (one more, empty, is written too)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.items < 1 or args.files < 1:
        parser.error("--items and --files must be at least 1")
    decimal.getcontext().prec = 60
    rng = random.Random(args.seed)
    export_id = f"{EXPORT_MS:014d}-{rng.randrange(16**8):08x}"
    base = os.path.join(args.root, PREFIX, "AWSDynamoDB", export_id)
    data_dir = os.path.join(base, "data")
    os.makedirs(data_dir, exist_ok=True)
    names = [file_name(rng) + ".json.gz" for _ in range(args.files + 1)]
    outs = [gzip.GzipFile(os.path.join(data_dir, name), "wb", compresslevel=6, mtime=0) for name in names]
    counts = [0] * len(names)
    billed = 0
    for item in items(rng, args.items):
        line = (json.dumps({"Item": typed(item)}, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        # A partition's items share a file: the hash of the partition key picks it (never the
        # last file, the empty partition's).
        index = int.from_bytes(hashlib.md5(item["PK"].encode()).digest()[:4], "big") % args.files
        outs[index].write(line)
        counts[index] += 1
        billed += len(line)
    for out in outs:
        out.close()
    files_lines = []
    gzip_bytes = 0
    for name, count in zip(names, counts):
        with open(os.path.join(data_dir, name), "rb") as f:
            data = f.read()
        gzip_bytes += len(data)
        files_lines.append({
            "itemCount": count,
            "md5Checksum": md5_b64(data),
            "etag": hashlib.md5(data).hexdigest() + "-1",
            "dataFileS3Key": f"{PREFIX}/AWSDynamoDB/{export_id}/data/{name}",
        })
    summary = {
        "version": "2020-06-30",
        "exportArn": f"{TABLE_ARN}/export/{export_id}",
        "startTime": iso(EXPORT_MS + 60_000),
        "endTime": iso(EXPORT_MS + 600_000),
        "tableArn": TABLE_ARN,
        "tableId": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
        "exportTime": iso(EXPORT_MS),
        "s3Bucket": "storefront-exports",
        "s3Prefix": PREFIX,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{PREFIX}/AWSDynamoDB/{export_id}/manifest-files.json",
        "billedSizeBytes": billed,
        "itemCount": sum(counts),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }
    files_text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in files_lines).encode()
    summary_text = json.dumps(summary, separators=(",", ":")).encode()
    for name, data in [("manifest-files", files_text), ("manifest-summary", summary_text)]:
        with open(os.path.join(base, name + ".json"), "wb") as f:
            f.write(data)
        with open(os.path.join(base, name + ".md5"), "w") as f:
            f.write(md5_b64(data))
    open(os.path.join(base, "_started"), "wb").close()
    print(json.dumps({"export_dir": base, "items": sum(counts), "files": len(names), "gzip_bytes": gzip_bytes}))


if __name__ == "__main__":
    main()

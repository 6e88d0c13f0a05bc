#!/usr/bin/env python3
"""Writes the items of a DynamoDB JSON export as the two scan dumps users hand over instead of an
export (the migration guide's "Option B"):

- scan-output.json: what `aws dynamodb scan --output json` prints (typed items under "Items",
  pretty-printed with 4 spaces, Count and ScannedCount after them);
- guide-dump.json: the guide's boto3 script, `json.dump(items, f, cls=DecimalEncoder, indent=2)`
  of the resource API's items (TypeDeserializer: Decimal, set, Binary). Its DecimalEncoder turns
  numbers into floats; sets and Binary, which it does not handle (the script as printed fails on
  them), become lists and base64 text, the usual workaround.

usage: scan_dumps.py EXPORT_DIR OUT_DIR
"""

import base64
import gzip
import json
import os
import sys
from decimal import Decimal

from boto3.dynamodb.types import Binary, TypeDeserializer


class DecimalEncoder(json.JSONEncoder):
    """The guide's encoder, plus the usual workaround for sets and binary."""

    def default(self, obj):
        if isinstance(obj, Decimal):
            return float(obj)
        if isinstance(obj, (set, frozenset)):
            return list(obj)
        if isinstance(obj, Binary):
            return base64.b64encode(obj.value).decode()
        return super().default(obj)


def items_of(export_dir):
    with open(os.path.join(export_dir, "manifest-files.json")) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    for entry in entries:
        path = os.path.join(export_dir, "data", entry["dataFileS3Key"].rsplit("/", 1)[1])
        raw = open(path, "rb").read()
        if not raw:
            continue
        for line in gzip.decompress(raw).decode().split("\n"):
            if line.strip():
                yield json.loads(line)["Item"]


def main():
    export_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    typed = list(items_of(export_dir))
    with open(os.path.join(out_dir, "scan-output.json"), "w") as f:
        json.dump({"Items": typed, "Count": len(typed), "ScannedCount": len(typed), "ConsumedCapacity": None}, f, indent=4, ensure_ascii=False)
        f.write("\n")
    deserializer = TypeDeserializer()

    def from_export(value):
        # Exports hold binary as base64 text; the resource API hands back Binary.
        (descriptor, inner), = value.items()
        if descriptor == "B":
            return Binary(base64.b64decode(inner))
        if descriptor == "BS":
            return {Binary(base64.b64decode(b)) for b in inner}
        if descriptor == "M":
            return {k: from_export(v) for k, v in inner.items()}
        if descriptor == "L":
            return [from_export(v) for v in inner]
        try:
            return deserializer.deserialize(value)
        except ArithmeticError:
            # boto3's DYNAMODB_CONTEXT raises Rounded on some valid numbers (40-character ones
            # with trailing zeros): such a scan fails in the SDK; keep the number as written.
            if descriptor == "N":
                return Decimal(inner)
            return {Decimal(n) for n in inner}

    plain = [{name: from_export(value) for name, value in item.items()} for item in typed]
    guide_dir = os.path.join(out_dir, "guide")
    os.makedirs(guide_dir, exist_ok=True)
    with open(os.path.join(guide_dir, "guide-dump.json"), "w") as f:
        json.dump(plain, f, cls=DecimalEncoder, indent=2)
    print(len(typed))


if __name__ == "__main__":
    main()

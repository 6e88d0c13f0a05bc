#!/usr/bin/env python3
"""Rewrites a DynamoDB JSON export as the Amazon Ion export of the same items: every data file
`data/<name>.json.gz` becomes `data/<name>.ion.gz` with one `$ion_1_0 {Item:{…}}` line per item
(Ion written by hand the way DynamoDB's exporter writes it: decimals, `$dynamodb_SS/NS/BS` set
annotations, blobs), and new manifests (outputFormat ION) with their checksums.

usage: to_ion.py EXPORT_DIR OUT_ROOT   (EXPORT_DIR is …/AWSDynamoDB/<ExportId>; the same relative
path is written under OUT_ROOT). Lines that are not items are carried over as they are.
"""

import gzip
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_history import ion_struct, md5_b64  # noqa: E402


def main():
    export_dir, out_root = sys.argv[1], sys.argv[2]
    parts = os.path.abspath(export_dir).split(os.sep)
    at = len(parts) - 1 - parts[::-1].index("AWSDynamoDB")
    relative = os.sep.join(parts[at - 1 if at > 0 else at:])
    # Keep everything above AWSDynamoDB (the export's prefix) as it is.
    prefix_parts = []
    root = os.sep.join(parts[:at])
    with open(os.path.join(export_dir, "manifest-summary.json")) as f:
        summary = json.load(f)
    prefix = summary.get("s3Prefix")
    out_dir = os.path.join(out_root, *( [prefix] if prefix else []), "AWSDynamoDB", parts[-1])
    os.makedirs(os.path.join(out_dir, "data"), exist_ok=True)
    files_lines = []
    with open(os.path.join(export_dir, "manifest-files.json")) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    for entry in entries:
        key = entry["dataFileS3Key"]
        name = key.rsplit("/", 1)[1]
        source = os.path.join(export_dir, "data", name)
        raw = open(source, "rb").read()
        lines = []
        if raw:
            for line in gzip.decompress(raw).decode().split("\n"):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)["Item"]
                    lines.append("$ion_1_0 {Item:" + ion_struct(item) + "}")
                except (ValueError, KeyError, TypeError):
                    lines.append(line)
        ion_name = name.replace(".json.gz", ".ion.gz")
        data = gzip.compress("".join(l + "\n" for l in lines).encode(), mtime=0) if raw else b""
        with open(os.path.join(out_dir, "data", ion_name), "wb") as f:
            f.write(data)
        files_lines.append({
            "itemCount": entry["itemCount"],
            "md5Checksum": md5_b64(data),
            "etag": hashlib.md5(data).hexdigest() + "-1",
            "dataFileS3Key": key.replace(".json.gz", ".ion.gz"),
        })
    summary["outputFormat"] = "ION"
    files_text = "".join(json.dumps(l, separators=(",", ":")) + "\n" for l in files_lines).encode()
    summary_text = json.dumps(summary, separators=(",", ":")).encode()
    for name, data in [("manifest-files", files_text), ("manifest-summary", summary_text)]:
        with open(os.path.join(out_dir, name + ".json"), "wb") as f:
            f.write(data)
        with open(os.path.join(out_dir, name + ".md5"), "w") as f:
            f.write(md5_b64(data))
    print(out_dir)


if __name__ == "__main__":
    main()

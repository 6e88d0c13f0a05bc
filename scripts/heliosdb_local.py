"""Finding and placing a local `heliosdb-nano` for the hand-run HeliosDB scripts
(`heliosdb-apply-ceiling.py`, `heliosdb-routed-split.py`): the binary `scripts/install-heliosdb`
caches, or $FERRY_HELIOSDB_BIN, or one on PATH; and a free loopback port for it."""

import os
import shutil
import socket
import sys

HELIOSDB_VERSION = "4.41.1"


def heliosdb_binary():
    env = os.environ.get("FERRY_HELIOSDB_BIN")
    if env:
        return env
    cached = os.path.expanduser(f"~/.cache/ferry/heliosdb-{HELIOSDB_VERSION}/bin/heliosdb-nano")
    if os.path.isfile(cached):
        return cached
    found = shutil.which("heliosdb-nano")
    if found:
        return found
    sys.exit("no heliosdb-nano binary: run scripts/install-heliosdb or set FERRY_HELIOSDB_BIN")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

#!/usr/bin/env bash
# Create .bench-venv (git-ignored) with the peer engines for benchmarks/run_peers.py
# plus costwarden itself (editable), so one interpreter can time all of them.
# Idempotent: reruns reuse the venv and pip skips satisfied pins.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$root/.bench-venv"
reqs="$here/requirements-peers.txt"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

"${pip[@]}" install -q -r "$reqs"

# OPA (Go): wheel declares Requires-Python >=3.14; installs and runs on 3.11.
opa_pin="$(sed -n 's/^# *\(opa-golib-python-bindings==[^ ]*\) *$/\1/p' "$reqs" | tail -n 1)"
if [ -z "$opa_pin" ]; then
    echo "setup_peers.sh: no opa-golib-python-bindings pin in $reqs" >&2
    exit 1
fi
"${pip[@]}" install -q --ignore-requires-python --no-deps "$opa_pin"

# costwarden itself, for benchmarks/engine.py to time it in the same interpreter.
"${pip[@]}" install -q -e "$root"

"$venv/bin/python" - <<'PY'
import sys
sys.path.insert(0, "benchmarks")
from peers import all_peers

for peer in all_peers():
    if peer.available:
        peer.verify()
        print(f"ok           {peer.name}")
    else:
        print(f"unavailable  {peer.name}: {peer.reason}")
PY

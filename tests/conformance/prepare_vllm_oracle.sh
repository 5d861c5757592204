#!/usr/bin/env bash
# Prepare the vLLM "oracle" for tests/conformance/test_vllm_parity.py: vLLM's own argument
# parser, importable on a machine without a GPU. Idempotent and cached; prints what it did.
#
#   $ORACLE/venv/           python3 -m venv + CPU torch (from the local wheel, pip's constraint
#                           file caps torch) + the pure-Python packages vLLM's parser imports,
#                           pinned, installed --no-deps so nothing pulls a CUDA torch
#   $ORACLE/vllm-<ver>/     `pip install --no-deps --target` of each vLLM release, put on
#                           PYTHONPATH per run (one venv serves every release). The CUDA kernels
#                           (*.so over 4 MB) are deleted: the parser never loads them.
#   $ORACLE/vllm-<ver>/.ready   written after the release's parser was built successfully
#
# Usage: tests/conformance/prepare_vllm_oracle.sh [VERSION...]
#   ORACLE defaults to ${COSTWARDEN_VLLM_ORACLE:-$HOME/.cache/costwarden/vllm-oracle};
#   versions default to the tables shipped in costwarden/adapters/vllm/data.
# Exit status: 0 when the latest release's oracle is ready (older ones are best effort).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
ORACLE="${COSTWARDEN_VLLM_ORACLE:-$HOME/.cache/costwarden/vllm-oracle}"
PYTHON="${PYTHON:-python3}"
export VLLM_TARGET_DEVICE=cpu PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "$#" -gt 0 ]; then
  versions="$*"
else
  versions="$(ls "$repo/costwarden/adapters/vllm/data" | sed -n 's/^vllm-\(.*\)\.json$/\1/p' | sort -V -r | tr '\n' ' ')"
fi
latest="$(echo $versions | tr ' ' '\n' | sort -V | tail -1)"

# The packages vLLM's `vllm serve` parser imports (found by trial with 0.33.0, 0.11.0, 0.10.2 and
# 0.8.5.post1), pinned to what was tested. Not torch: it comes first, from the local CPU wheel.
BASE_PACKAGES=(
  aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 annotated-doc==0.0.7 annotated-types==0.8.0
  anyio==4.16.0 apache-tvm-ffi==0.1.15.post2 attrs==26.1.0 blake3==1.0.11 cachetools==8.0.2 cbor2==6.3.0
  certifi==2026.10.19.post1 charset-normalizer==3.5.3 click==8.5.1 cloudpickle==3.1.3 fastapi==0.165.0
  frozenlist==1.8.0 h11==0.16.0 hf-xet==1.8.0 httpcore2==2.16.2 httpx2==2.16.2 huggingface_hub==2.4.0
  idna==3.20 jiter==0.19.0 llguidance==1.9.1 markdown-it-py==4.3.0 mdurl==0.1.2 msgspec==0.23.0
  multidict==7.2.1 numpy==2.4.6 openai==3.57.0 openai-harmony==0.0.8 opentelemetry-api==1.45.2
  orjson==3.13.0 packaging==26.4 partial-json-parser==0.2.1.1.post7 pillow==13.0.0
  prometheus_client==0.26.0 propcache==0.5.4 psutil==7.2.2 py-cpuinfo==9.0.0 pybase64==1.5.1
  pydantic==2.14.4 pydantic_core==2.50.5 Pygments==2.21.0 python-multipart==0.0.34 PyYAML==6.0.4
  pyzmq==27.3.0 regex==2026.11.19 requests==2.34.2 rich==15.0.0 safetensors==0.8.0 setproctitle==1.3.8
  shellingham==1.5.4 sniffio==1.3.1 starlette==1.10.0 tokenizers==0.23.3 tqdm==4.70.1
  transformers==5.24.0 truststore==0.10.5 typer==0.29.2 typing-inspection==0.4.5 urllib3==2.8.0
  uvicorn==0.54.0 uvloop==0.23.0 watchfiles==1.3.0 xgrammar==0.2.9 yarl==1.25.1
)
base_stamp="$ORACLE/venv/.base-$(printf '%s\n' torch==2.13.0 "${BASE_PACKAGES[@]}" | sha256sum | cut -c1-12)"
py="$ORACLE/venv/bin/python"
log() { echo "prepare_vllm_oracle: $*"; }

started=$(date +%s)
mkdir -p "$ORACLE"
if [ -f "$base_stamp" ]; then
  log "venv ready (cached): $ORACLE/venv"
else
  log "creating $ORACLE/venv (CPU torch + parser dependencies; a few minutes the first time)"
  rm -rf "$ORACLE/venv"
  "$PYTHON" -m venv "$ORACLE/venv" || { log "cannot create the venv"; exit 1; }
  "$py" -m pip install -q torch==2.13.0 || { log "torch==2.13.0 (CPU) did not install"; exit 1; }
  "$py" -m pip install -q --no-deps "${BASE_PACKAGES[@]}" || { log "parser dependencies did not install"; exit 1; }
  touch "$base_stamp"
  log "venv ready in $(( $(date +%s) - started ))s"
fi

smoke() {  # the release's `vllm serve` parser builds and parses one command line
  PYTHONPATH="$ORACLE/vllm-$1:$repo" "$py" - <<'EOF' >/dev/null 2>"$ORACLE/vllm-$1.smoke.log"
from costwarden.adapters.vllm.exact import resolve
out = resolve(["m", "--max-num-seqs", "8"])
assert out["args"]["max_num_seqs"] == 8, out
EOF
}

status=0
for v in $versions; do
  dir="$ORACLE/vllm-$v"
  if [ -f "$dir/.ready" ]; then
    log "vLLM $v ready (cached): $dir"
    continue
  fi
  t0=$(date +%s)
  log "installing vLLM $v (--no-deps --target $dir)"
  rm -rf "$dir" "$dir.tmp"
  if ! "$py" -m pip install -q --no-deps --target "$dir.tmp" "vllm==$v" >"$ORACLE/vllm-$v.pip.log" 2>&1; then
    log "vLLM $v did not install (see $ORACLE/vllm-$v.pip.log)"
    [ "$v" = "$latest" ] && status=1
    continue
  fi
  find "$dir.tmp" -name '*.so' -size +4M -delete
  rm -rf "$dir.tmp/bin"
  mv "$dir.tmp" "$dir"
  if smoke "$v"; then
    touch "$dir/.ready"
    log "vLLM $v ready in $(( $(date +%s) - t0 ))s"
  else
    log "vLLM $v does not import beside torch 2.13 CPU (see $ORACLE/vllm-$v.smoke.log)"
    [ "$v" = "$latest" ] && status=1
  fi
done
log "done in $(( $(date +%s) - started ))s; oracle root: $ORACLE"
exit $status

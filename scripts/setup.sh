#!/usr/bin/env bash
# Create .venv with the CPU build of torch and haaqi-bench installed (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# no wheel cache: it would hold a second copy of every download (a clean CI disk ran out once)
export PIP_NO_CACHE_DIR=1
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned to the CPU wheel, so no dependency pulls a CUDA build
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,rnnoise]"

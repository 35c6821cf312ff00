#!/usr/bin/env bash
# Set everything up and run the main job on the built-in corpus:
# sweep -> results/<run>/ (table, leaderboard.md, plots/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/bench run "$@"

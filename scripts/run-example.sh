#!/usr/bin/env bash
# Run curfew on the FastAPI example app: builds curfew, makes the Python venv
# (first run only), then serves on http://127.0.0.1:8000 until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin curfew
venv="$(bash scripts/python-env.sh | tail -1)"
export PATH="$venv/bin:$PATH"
exec target/release/curfew serve --config examples/curfew.toml "$@"

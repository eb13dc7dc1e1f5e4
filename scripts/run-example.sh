#!/usr/bin/env bash
# Run curfew on the FastAPI example app: builds curfew (unless $CURFEW_BIN
# names a binary, e.g. the one `pip install curfew` put on PATH), makes the
# Python venv (first run only), then serves on http://127.0.0.1:8000 until
# Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${CURFEW_BIN:-}" ]; then
    curfew="$CURFEW_BIN"
else
    target="${CARGO_TARGET_DIR:-target}"
    if [ ! -x "$target/release/curfew" ]; then
        echo "run-example: building curfew (release; the first build takes several minutes on 2 cores)" >&2
    fi
    # cargo's own progress bar shows what it is doing.
    cargo build --release --bin curfew
    curfew="$target/release/curfew"
fi
venv="$(bash scripts/python-env.sh | tail -1)"
export PATH="$venv/bin:$PATH"
exec "$curfew" serve --config examples/curfew.toml "$@"

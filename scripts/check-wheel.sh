#!/usr/bin/env bash
# Build the curfew wheel, install it into a fresh venv the way a user would,
# and check it: `curfew --version`, the FastAPI example served by the wheel's
# curfew with a job run through @curfew.job, then the SDK's pytest suite
# (python/tests) against the installed package and binary, on SQLite and
# PostgreSQL.
#
#   bash scripts/check-wheel.sh              # as .ci/run does
#   WHEEL_PROFILE=dev bash scripts/check-wheel.sh   # faster, unoptimised binary
#   WHEEL=path/to/curfew.whl bash scripts/check-wheel.sh   # check a built wheel
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
work="$target/check-wheel"
python="${PYTHON:-python3}"
maturin_version="1.16.0"

log() { echo "check-wheel: $*" >&2; }
t0=$(date +%s)

if [ -z "${WHEEL:-}" ]; then
    tools="$target/maturin-venv"
    if [ ! -x "$tools/bin/maturin" ] || ! "$tools/bin/maturin" --version | grep -q "$maturin_version"; then
        log "installing maturin $maturin_version into $tools"
        "$python" -m venv "$tools"
        "$tools/bin/pip" install --quiet --disable-pip-version-check "maturin==$maturin_version"
    fi
    rm -rf "$work/wheels"
    profile="${WHEEL_PROFILE:-release}"
    log "building the wheel (profile $profile)"
    "$tools/bin/maturin" build --profile "$profile" --locked --out "$work/wheels"
    WHEEL="$(ls "$work"/wheels/curfew-*.whl)"
fi
log "wheel: $WHEEL ($(du -h "$WHEEL" | cut -f1))"
# No test helper may be in it.
if "$python" -m zipfile -l "$WHEEL" | grep -E 'curfew-(load|testworker)'; then
    log "error: the wheel carries a test helper binary"
    exit 1
fi
t_built=$(date +%s)

venv="$work/venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$WHEEL" \
    -r examples/requirements.txt -r python/tests/requirements.txt
want="curfew $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
# `curfew 0.1.0 (<commit>)`: the version, then the commit it was built from.
got="$("$venv/bin/curfew" --version)"
case "$got" in
    "$want ("*")") ;;
    *) log "error: curfew --version says '$got', Cargo.toml '$want (<commit>)'"; exit 1 ;;
esac
[ "$("$venv/bin/python" -m curfew --version)" = "$got" ]
"$venv/bin/python" -c 'import curfew, sys; assert curfew.__file__.startswith(sys.prefix), curfew.__file__'
log "$got installed in $venv"

# The FastAPI example, served by the wheel's curfew, a job through @curfew.job.
run="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$run"' EXIT
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$run/curfew.toml" <<TOML
command = "uvicorn app:app --fd 3 --no-access-log"
chdir = "$repo/examples/fastapi_app"
bind = "127.0.0.1:$port"
workers = 2
ready_path = "/health"
control_socket = "$run/control.sock"
[jobs]
store = "sqlite://$run/jobs.db"
TOML
PATH="$venv/bin:$PATH" "$venv/bin/curfew" serve --config "$run/curfew.toml" >"$run/log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$run/log" >&2; exit 1; }
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/" | grep -q '"ok":true'
job="$(curl -sf -XPOST "http://127.0.0.1:$port/signup" -d '{"email": "wheel@example.com"}')"
id="$(echo "$job" | sed -n 's/.*"job":\([0-9]*\).*/\1/p')"
[ -n "$id" ] || { log "error: /signup answered $job"; cat "$run/log" >&2; exit 1; }
for _ in $(seq 1 100); do
    state="$("$venv/bin/curfew" jobs show "$id" --control-socket "$run/control.sock" 2>/dev/null \
        | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["state"])' || true)"
    [ "$state" = succeeded ] && break
    sleep 0.1
done
[ "$state" = succeeded ] || { log "error: job $id is '$state'"; cat "$run/log" >&2; exit 1; }
# The worker's line is relayed a moment after the job's verdict (curfew holds
# a line up to 100 ms to see whether a traceback follows it).
for _ in $(seq 1 50); do
    grep -q "sending email to wheel@example.com (job $id" "$run/log" && break
    sleep 0.1
done
grep -q "sending email to wheel@example.com (job $id" "$run/log"
grep -q "Serving up to 32 requests at once per worker: \`uvicorn\` is an async server" "$run/log"
kill -TERM "$pid"
wait "$pid"
log "served / and ran job $id (send_email) through @curfew.job; clean exit"
t_served=$(date +%s)

# The SDK's suite against the installed package and its binary.
(cd "$repo" && CURFEW_TEST_REQUIRE_PG="${CURFEW_TEST_REQUIRE_PG:-1}" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests)
t_tests=$(date +%s)
log "done: build $((t_built - t0)) s, install+serve $((t_served - t_built)) s, SDK tests $((t_tests - t_served)) s"

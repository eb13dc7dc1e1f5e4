#!/usr/bin/env bash
# Create (or reuse) the Python venv used by curfew's example apps and print its path.
#
#   scripts/python-env.sh            -> venv at <repo>/.venv
#   CURFEW_VENV=/tmp/v scripts/python-env.sh
#
# Installs examples/requirements.txt and python/tests/requirements.txt; skipped when the stamp file in the venv
# matches the sha256 of requirements.txt, so re-runs are instant.
# The last line printed on stdout is the venv path.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CURFEW_VENV:-$repo/.venv}"
req="$repo/examples/requirements.txt"
test_req="$repo/python/tests/requirements.txt"
stamp="$venv/.curfew-requirements.sha256"
python="${PYTHON:-python3}"

log() { echo "python-env: $*" >&2; }

if ! command -v "$python" >/dev/null 2>&1; then
    log "error: $python not found; on Debian: apt-get install -y python3 python3-venv"
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    log "creating venv at $venv"
    existed=0
    [ -e "$venv" ] && existed=1
    if ! "$python" -m venv "$venv" >&2; then
        # Debian without python3-venv: ensurepip is missing and venv leaves a
        # pip-less half venv behind. Remove it (only if we created it) and try
        # virtualenv, installed into a throw-away dir so nothing system-wide changes.
        [ "$existed" = 0 ] && rm -rf "$venv"
        log "'$python -m venv' failed (ensurepip missing?); trying virtualenv"
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        if "$python" -m pip install --quiet --disable-pip-version-check --target "$tmp" virtualenv >&2 \
            && PYTHONPATH="$tmp" "$python" -m virtualenv --quiet "$venv" >&2; then
            :
        else
            log "error: could not create a venv at $venv."
            log "on Debian/Ubuntu run:  apt-get install -y python3-venv   (then re-run this script)"
            exit 1
        fi
    fi
fi

want="$(cat "$req" "$test_req" | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    log "installing $req"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" -r "$test_req" >&2
    echo "$want" >"$stamp"
fi

# The curfew SDK (python/curfew) from this checkout, for the example apps and
# the SDK's tests, without building the wheel: a .pth entry comes after
# site-packages, so an installed curfew wheel still wins.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
echo "$repo/python" >"$site/curfew-sdk-source.pth"

# keep the venv out of git even when it lives inside the repo
[ -e "$venv/.gitignore" ] || echo "*" >"$venv/.gitignore"

echo "$venv"

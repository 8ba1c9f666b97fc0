#!/usr/bin/env bash
# Canary: the steering and model tests under the newest releases (no lock), in their own virtualenv.
# Prints which releases differ from the lock and which tests they break; always exits 0, because a release
# nobody has seen yet must not block our own landing (the locked test run is the gate).
#   bash scripts/canary.sh [VENV_DIR]        # default .venv-canary
set -uo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-canary}"
log="$venv/canary-pytest.log"
tests=(tests/context/test_steering.py tests/models)
(
  set -e
  python3 -m venv "$venv"
  . "$venv/bin/activate"
  bash scripts/install.sh latest >"$venv/canary-install.log" 2>&1
) || { echo "canary: install of the newest releases failed (see $venv/canary-install.log):"; tail -5 "$venv/canary-install.log"; exit 0; }
# -p no:cacheprovider: leave the gate's pytest cache alone; -rfE: one FAILED/ERROR line per broken test
"$venv/bin/python" -m pytest -q -rfE -p no:cacheprovider "${tests[@]}" >"$log" 2>&1
status=$?
"$venv/bin/python" scripts/lockfile.py canary "$log" --python "$venv/bin/python" --json "$venv/canary.json" || true
echo "canary: pytest exit status $status under the newest releases (log: $log)"
exit 0

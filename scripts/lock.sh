#!/usr/bin/env bash
# Regenerate requirements/constraints.txt, the lock every install but `install.sh latest` uses:
# a fresh virtualenv gets the newest releases that satisfy pyproject.toml (install.sh latest), and its
# exact versions become the lock. Commit the new lock only after `.ci/run` passed with it.
#   bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
PATH="$venv/bin:$PATH" bash scripts/install.sh latest
"$venv/bin/python" scripts/lockfile.py write --python "$venv/bin/python"

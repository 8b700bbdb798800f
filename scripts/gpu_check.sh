#!/usr/bin/env bash
# The one-command GPU check (under 8 minutes on one GPU): the gpu-marked tests, CUDA vs CPU
# agreement on real data (alignment within 0.005, few-shot accuracy within 0.5 points) and
# extraction throughput of three untrained timm models; one JSON file of results.
#   scripts/gpu_check.sh [--device cuda] [--out gpu_check.json] [--quick]
# Uses .venv when present, else the python3 on PATH with src/ on PYTHONPATH (as on a GPU
# machine whose image already holds torch and timm). Data: $REPALIGN_MIRROR or ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=.venv/bin/python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${REPALIGN_MIRROR:-}" ] && [ -d ../shared/data ]; then
  export REPALIGN_MIRROR="$(cd ../shared/data && pwd)"
fi
exec "$python" scripts/gpu_check.py "$@"

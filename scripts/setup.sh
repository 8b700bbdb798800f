#!/usr/bin/env bash
# Create (or update) the project's virtual environment at .venv. Idempotent: a second run
# with an unchanged pyproject.toml does nothing but print where the environment is.
#   scripts/setup.sh          runtime extras (torch, timm, tflite, ray)
#   scripts/setup.sh --dev    plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extra="all"
[ "${1:-}" = "--dev" ] && extra="dev"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

stamp=".venv/.repalign-setup-$extra"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date ($extra)"
  exit 0
fi

# Pin torch/torchvision to the builds the project is tested with; on these machines pip
# takes them from local files instead of downloading several GB.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/pip install --quiet -e ".[$extra]"
echo "$want" > "$stamp"
echo "setup: .venv ready ($extra)"

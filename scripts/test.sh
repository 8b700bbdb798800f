#!/usr/bin/env bash
# Set up .venv with the test tools (and headless Chromium for the report test), check the
# layering (import-linter), lint and format (ruff), then run the test suite. Extra arguments
# go to pytest (e.g. -m "not slow", -k triplet).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "test: could not install chromium; browser tests will be skipped" >&2
fi
if [ -z "${REPALIGN_MIRROR:-}" ] && [ -d ../shared/data ]; then
  export REPALIGN_MIRROR="$(cd ../shared/data && pwd)"
fi
.venv/bin/lint-imports --no-cache --config pyproject.toml
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
exec .venv/bin/python -m pytest "$@"

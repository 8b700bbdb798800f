#!/usr/bin/env bash
# Quick start: set up .venv, then run the default study (configs/quickstart.toml) offline
# against the data mirror in ../shared/data when it exists. Extra arguments go to `repalign run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -z "${REPALIGN_MIRROR:-}" ] && [ -d ../shared/data ]; then
  export REPALIGN_MIRROR="$(cd ../shared/data && pwd)"
fi
exec .venv/bin/repalign run configs/quickstart.toml "$@"

#!/usr/bin/env bash
# The README's test command: system packages if missing, a debug build, the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
swift build --build-tests
exec swift test --skip-build "$@"

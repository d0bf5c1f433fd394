#!/usr/bin/env bash
# The README's first command: installs system packages if missing, builds the release binary
# and runs `peernode demo` (a local cluster on loopback). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
swift build -c release --product peernode
exec .build/release/peernode demo "$@"

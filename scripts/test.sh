#!/usr/bin/env bash
# The README's test command: system packages if missing, a debug build, the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
swift build --build-tests
# No AVX2 code outside the KernelsAVX2 module (docs/kernels.md §6).
./scripts/check-avx2-isolation.sh .build/debug/peernode .build/debug/peernodePackageTests.xctest
# deploy/ (manifests, compose file, dashboard) and the status page in a real browser.
./scripts/check-deploy.sh
./scripts/check-status-page.sh
# Serial: the multi-peer tests are about timeouts and failure detection, which a machine running
# several in-process clusters at once (on 2 cores) turns into false alarms.
exec swift test --skip-build --no-parallel "$@"

#!/usr/bin/env bash
# Renders a live status page to a PNG, so a person can check it without a browser at hand:
# starts a small local cluster (deploy/local-cluster.sh), waits for some outer steps, points
# headless Chromium at the first peer's status port, then stops the cluster.
# usage: scripts/status-screenshot.sh [OUT.png] [PEERS] [OUTER_STEPS_BEFORE_SHOT]
#   PEERNODE_BIN: the binary (default .build/debug/peernode, built if missing)
set -euo pipefail
OUT=$(realpath -m "${1:-status-page.png}")
cd "$(dirname "$0")/.."
N=${2:-3}
STEPS=${3:-25}
export PEERNODE_BIN=${PEERNODE_BIN:-.build/debug/peernode}
if [[ ! -x $PEERNODE_BIN ]]; then ./scripts/install-deps.sh; swift build --product peernode; fi
if ! command -v chromium >/dev/null; then
  apt-get install -y chromium >/dev/null || { echo "chromium is not installed and cannot be (apt-get install chromium)" >&2; exit 1; }
fi

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/peernode-status-shot.XXXXXX")
export PEERNODE_LOG_DIR=$LOGS
deploy/local-cluster.sh "$N" --inner-steps 20 --log-level warning >"$LOGS/cluster.out" 2>&1 &
CLUSTER=$!
stop() { kill -TERM "$CLUSTER" 2>/dev/null || true; wait "$CLUSTER" 2>/dev/null || true; }
trap stop EXIT

for _ in $(seq 1 600); do
  [[ $(grep -c '^outer ' "$LOGS/peer0.out" 2>/dev/null || true) -ge $STEPS ]] && break
  kill -0 "$CLUSTER" 2>/dev/null || { echo "the cluster stopped; see $LOGS" >&2; exit 1; }
  sleep 0.2
done
PORT=$(grep -o 'status_port=[0-9]*' "$LOGS/peer0.out" | cut -d= -f2)
[[ -n $PORT ]] || { echo "no status_port in $LOGS/peer0.out" >&2; exit 1; }
"$PEERNODE_BIN" status "127.0.0.1:$PORT"

# --no-sandbox: Chromium refuses to run as root otherwise. The virtual time budget lets the page's
# first polls and drawing finish before the shot.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,960 \
  --virtual-time-budget=4000 --screenshot="$OUT" "http://127.0.0.1:$PORT/" 2>"$LOGS/chromium.err" \
  || { echo "chromium failed; see $LOGS/chromium.err" >&2; exit 1; }
echo "wrote $OUT (logs in $LOGS)"

#!/usr/bin/env bash
# The live status page in a real browser: starts a two-peer cluster on loopback, loads the first
# peer's page in headless Chromium and fails unless its three plots drew data: the DOM after the
# page's first polls (each canvas's data-points, the header fields), and the pixels of a
# screenshot (each plot's line colour). Bounded: about a minute, three at most.
# usage: scripts/check-status-page.sh        (PEERNODE_BIN: default .build/debug/peernode)
set -euo pipefail
cd "$(dirname "$0")/.."
export PEERNODE_BIN=${PEERNODE_BIN:-.build/debug/peernode}
[[ -x $PEERNODE_BIN ]] || { echo "check-status-page: no $PEERNODE_BIN (swift build first)" >&2; exit 1; }
command -v chromium >/dev/null || { echo "check-status-page: chromium is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/peernode-page-check.XXXXXX")
export PEERNODE_LOG_DIR=$WORK
STEPS=6
deploy/local-cluster.sh 2 --inner-steps 5 --log-level warning >"$WORK/cluster.out" 2>&1 &
CLUSTER=$!
OK=
# Logs stay for a failure, go after a pass.
stop() { kill -TERM "$CLUSTER" 2>/dev/null || true; wait "$CLUSTER" 2>/dev/null || true; [[ -z $OK ]] || rm -rf "$WORK"; }
trap stop EXIT
fail() { echo "check-status-page: $*; logs in $WORK" >&2; exit 1; }

for _ in $(seq 1 600); do  # at most 120 s
  [[ $(grep -c '^outer ' "$WORK/peer0.out" 2>/dev/null || true) -ge $STEPS ]] && break
  kill -0 "$CLUSTER" 2>/dev/null || fail "the cluster stopped"
  sleep 0.2
done
[[ $(grep -c '^outer ' "$WORK/peer0.out" 2>/dev/null || true) -ge $STEPS ]] || fail "no $STEPS outer steps in 120 s"
PORT=$(grep -o 'status_port=[0-9]*' "$WORK/peer0.out" | cut -d= -f2)
[[ -n $PORT ]] || fail "no status_port on peer 0's ready line"

# --no-sandbox: Chromium refuses to run as root otherwise. The virtual time budget lets the page
# poll /status and draw before the DOM is dumped and the shot taken.
browse() {
  timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
    --window-size=1280,1000 --virtual-time-budget=5000 "$@" "http://127.0.0.1:$PORT/" 2>>"$WORK/chromium.err"
}
browse --dump-dom >"$WORK/page.html" || fail "chromium --dump-dom failed"
browse --screenshot="$WORK/page.png" >/dev/null || fail "chromium --screenshot failed"

python3 - "$WORK/page.html" "$WORK/page.png" "$STEPS" <<'PY' || fail "the page did not render its plots with data"
import re, struct, sys, zlib
html, png, steps = open(sys.argv[1]).read(), open(sys.argv[2], "rb").read(), int(sys.argv[3])
problems = []

# The DOM: how many points each chart drew, and the header the same poll filled in.
def canvas_points(name):
    m = re.search(r'<canvas id="%s"[^>]*data-points="(\d+)"' % name, html)
    return int(m.group(1)) if m else None
for name, least in [("loss", steps), ("metric", steps), ("bandwidth", 2 * steps)]:
    n = canvas_points(name)
    if n is None or n < least:
        problems.append(f"canvas #{name} drew {n} points, expected at least {least}")
revision = re.search(r'id="revision">(\d+)<', html)
if not revision or int(revision.group(1)) < steps:
    problems.append(f"header revision is {revision and revision.group(1)}, expected at least {steps}")
if 'id="health" class="ok">healthy<' not in html:
    problems.append("the health badge does not say healthy")

# The pixels: each series' colour (the page's --a, the metric's violet, --b) must be on screen
# in quantity; only the plots' lines and the small legend swatches use them.
def decode(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, "unexpected PNG format"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if color == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows
width, height, bpp, rows = decode(png)
counts = {}
for row in rows:
    for x in range(0, width * bpp, bpp):
        key = row[x:x + 3]
        counts[key] = counts.get(key, 0) + 1
for name, rgb, least in [("loss and bandwidth sent (--a)", (0x25, 0x63, 0xeb), 300), ("metric", (0x7c, 0x3a, 0xed), 150),
                         ("bandwidth received (--b)", (0xdc, 0x26, 0x26), 100)]:
    n = counts.get(bytes(rgb), 0)
    if n < least:
        problems.append(f"{name}: {n} pixels of #{bytes(rgb).hex()} on screen, expected at least {least}")
for p in problems:
    print("check-status-page: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
OK=1
echo "check-status-page: the status page of a live peer drew its loss, metric and bandwidth plots (port $PORT)"

#!/usr/bin/env bash
# What TLS costs on the ring: all-reduce with TLS 1.3 (the default) against --plaintext, side by
# side in one sweep, N = 2 and 4, 64 and 256 MiB of f32, fp32 and int8 on the wire, on loopback
# and with every stream capped at 1 Gbit/s (kernel pacing, --stream-rate-mbps). Each round runs
# every configuration once per security, alternating which goes first; the summary gives each
# median over rounds and the TLS/plaintext ratio min/median/max over rounds.
#
#   scripts/bench-tls.sh [ROUNDS=3] [REPS=5]
# BEFORE_BIN=path/to/an/older/peernode adds a third column: that binary (plaintext, it knows no
# TLS), for "plaintext after the link refactor against before it".
# RATES="0 1000" N_LIST="2 4" SIZES="64 256" QUANTS="none int8" narrow the sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
reps=${2:-5}
BIN=.build/release/peernode
if [[ ! -x $BIN ]]; then
  ./scripts/install-deps.sh >&2
  swift build -c release --product peernode >&2
fi
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
for round in $(seq 1 "$rounds"); do
  for rate in ${RATES:-0 1000}; do
    for n in ${N_LIST:-2 4}; do
      for quant in ${QUANTS:-none int8}; do
        order=("psk" "off")
        ((round % 2 == 0)) && order=("off" "psk")
        [[ -n ${BEFORE_BIN:-} ]] && order+=("before")
        for sec in "${order[@]}"; do
          bin=$BIN; extra=()
          [[ $sec == off ]] && extra=(--plaintext)
          [[ $sec == before ]] && bin=$BEFORE_BIN
          # shellcheck disable=SC2086
          "$bin" bench allreduce --peers "$n" --size-mib ${SIZES:-64 256} --reps "$reps" --quant "$quant" \
            --stream-rate-mbps "$rate" --impl "$sec" "${extra[@]}" 2>/dev/null \
            | grep '^impl=' | sed "s/^/round=$round rate_mbps=$rate /" | tee -a "$raw"
        done
      done
    done
  done
done
python3 - "$raw" <<'PY'
import sys, statistics as st
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1]) if line.strip()]
configs = sorted({(r["rate_mbps"], r["N"], r["quant"], r["size_mib"]) for r in rows}, key=lambda c: (float(c[0]), int(c[1]), c[2], float(c[3])))
print("\n# median over rounds of each run's median ms; ratio = TLS / plaintext per round (min/median/max)")
print(f"{'link':>8} {'N':>2} {'quant':>5} {'MiB':>4} {'tls ms':>9} {'plain ms':>9} {'before ms':>9} {'tls/plain':>22} {'plain/before':>22}")
for c in configs:
    got = {}
    for r in rows:
        if (r["rate_mbps"], r["N"], r["quant"], r["size_mib"]) == c:
            got.setdefault(r["impl"], {})[r["round"]] = float(r["median_ms"])
    def med(impl): return f"{st.median(got[impl].values()):.1f}" if impl in got else "-"
    def ratio(a, b):
        if a not in got or b not in got: return "-"
        rs = sorted(got[a][k] / got[b][k] for k in got[a] if k in got[b])
        return f"{rs[0]:.3f}/{st.median(rs):.3f}/{rs[-1]:.3f}" if rs else "-"
    link = "loopback" if float(c[0]) == 0 else f"{float(c[0])/1000:g}Gbit/s"
    print(f"{link:>8} {c[1]:>2} {c[2]:>5} {c[3]:>4} {med('psk'):>9} {med('off'):>9} {med('before'):>9} {ratio('psk','off'):>22} {ratio('off','before'):>22}")
PY

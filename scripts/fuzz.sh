#!/usr/bin/env bash
# usage: scripts/fuzz.sh [Ns|N] [TARGET...]
#   Ns: N seconds per target (default 10s);  N: N inputs per target.
#   TARGET: frame handshake membership state-request config http tls (default: all).
#
# Runs each fuzz target (Sources/PeerNode/Fuzz/FuzzTargets.swift) under libFuzzer, starting from
# the seed corpus in Tests/Fuzz/corpus/TARGET (copied: the repository is never written), and
# prints one line per target: `TARGET inputs=… crashes=… coverage=… features=… corpus=…`
# (coverage: the edges libFuzzer saw covered). Exits 1 if any target crashed; the crashing
# inputs are kept in .build-fuzz/artifacts/TARGET/. Reproduce one with
#   PEERNODE_FUZZ_TARGET=TARGET .build-fuzz/release/peernode .build-fuzz/artifacts/TARGET/crash-…
#
# The fuzzing build is `peernode` compiled with -sanitize=fuzzer -DPEERNODE_FUZZ in a build
# directory of its own (.build-fuzz, release): libFuzzer's driver replaces the command line. It is
# linked with lld, since gold fails on libFuzzer's objects. docs/testing.md, "Fuzzing".
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${1:-10s}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(frame handshake membership state-request config http tls)
if [[ $budget =~ ^([0-9]+)s$ ]]; then
  limit=(-max_total_time="${BASH_REMATCH[1]}")
elif [[ $budget =~ ^[0-9]+$ ]]; then
  limit=(-runs="$budget")
else
  echo "usage: scripts/fuzz.sh [Ns|N] [TARGET...]" >&2
  exit 2
fi

swift_bin=$(dirname "$(readlink -f "$(command -v swift)")")
lld=$swift_bin/ld.lld
[[ -x $lld ]] || lld=$(command -v ld.lld || true)
[[ -n $lld ]] || { echo "fuzz: ld.lld not found (the Swift toolchain ships one)" >&2; exit 2; }
mkdir -p .build-fuzz
toolset=.build-fuzz/toolset.json
printf '{ "schemaVersion": "1.0", "linker": { "path": "%s" } }\n' "$lld" > "$toolset"

start=$(date +%s)
swift build -c release -j "${FUZZ_BUILD_JOBS:-1}" --product peernode --build-path .build-fuzz --toolset "$toolset" \
  -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library -Xswiftc -enable-testing -Xswiftc -DPEERNODE_FUZZ \
  2>&1 | grep -E "error|warning: unre|Compiling PeerNode|Build complete" || true
binary=.build-fuzz/release/peernode
[[ -x $binary ]] || { echo "fuzz: the fuzzing build failed" >&2; exit 2; }
echo "fuzz: build took $(( $(date +%s) - start )) s"

failed=0
for target in "${targets[@]}"; do
  work=.build-fuzz/corpus/$target
  artifacts=.build-fuzz/artifacts/$target
  rm -rf "$work" "$artifacts"
  mkdir -p "$work" "$artifacts"
  [[ -d Tests/Fuzz/corpus/$target ]] && cp Tests/Fuzz/corpus/"$target"/* "$work"/ 2>/dev/null || true
  log=.build-fuzz/$target.log
  t0=$(date +%s)
  set +e
  # (The Swift runtime's backtracer off: libFuzzer's own handler then saves the crashing input.)
  SWIFT_BACKTRACE=enable=no PEERNODE_FUZZ_TARGET=$target "$binary" "${limit[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" > "$log" 2>&1
  status=$?
  set -e
  inputs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}' || true)
  [[ -n $inputs ]] || inputs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  coverage=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
  features=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
  crashes=$(find "$artifacts" -type f | wc -l)
  # (A crash that left no input behind still counts.)
  [[ $status -eq 0 || $crashes -gt 0 ]] || crashes=1
  corpus=$(find "$work" -type f | wc -l)
  echo "$target inputs=${inputs:-0} crashes=$crashes coverage=${coverage:-?} features=${features:-?} corpus=$corpus seconds=$(( $(date +%s) - t0 ))"
  if [[ $status -ne 0 || $crashes -ne 0 ]]; then
    failed=1
    echo "fuzz: $target failed (exit $status); log: $log" >&2
    grep -E "ERROR|Fatal error|panic|SUMMARY" "$log" | head -5 >&2 || true
  fi
done
exit $failed

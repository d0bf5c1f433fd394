#!/usr/bin/env bash
# Side-by-side all-reduce sweep: peernode (fp32 and int8) against OpenMPI-TCP and Gloo, under the
# reference kit's load guard (../shared/bench/run_all.sh), ratios against the baseline.
# usage: scripts/bench-sweep.sh [NEED] [REPS] ["SIZES_MIB"] [MAX_ROUNDS]   (defaults 3 10 "64 256" 6)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${PEERNODE_SHARED:-../shared}/bench
[[ -x $B/run_all.sh ]] || { echo "bench kit not found at $B (set PEERNODE_SHARED)" >&2; exit 1; }
./scripts/install-deps.sh >&2
swift build -c release --product peernode >&2
HERE=$PWD
export STEPS=${STEPS:-"mpi-tcp:2 gloo:2 peernode:2 peernode-int8:2 mpi-tcp:4 gloo:4 peernode:4 peernode-int8:4"}
export CMD_peernode="$HERE/scripts/bench-allreduce.sh {N} \"{SIZES}\" {REPS} none"
export CMD_peernode_int8="$HERE/scripts/bench-allreduce.sh {N} \"{SIZES}\" {REPS} int8"
export BASELINE=${BASELINE:-gloo}
exec timeout 5400 "$B/run_all.sh" "${1:-3}" "${2:-10}" "${3:-64 256}" "${4:-6}"

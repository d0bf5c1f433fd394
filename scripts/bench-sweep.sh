#!/usr/bin/env bash
# Side-by-side all-reduce sweep: peernode (fp32 and int8) against OpenMPI-TCP and Gloo, under the
# reference benchmark kit's load guard (its run_all.sh), ratios against the baseline.
# usage: PEERNODE_BENCH_KIT=DIR scripts/bench-sweep.sh [NEED] [REPS] ["SIZES_MIB"] [MAX_ROUNDS]
#   DIR: the reference kit's folder (the one holding run_all.sh); required, no default.
#   Defaults: NEED 3, REPS 10, SIZES_MIB "64 256", MAX_ROUNDS 6.
set -euo pipefail
B=${PEERNODE_BENCH_KIT:-}
[[ -n $B ]] || { echo "usage: PEERNODE_BENCH_KIT=DIR $0 [NEED] [REPS] [\"SIZES_MIB\"] [MAX_ROUNDS] (DIR: the reference kit holding run_all.sh)" >&2; exit 2; }
B=$(cd "$B" && pwd) || exit 2
[[ -x $B/run_all.sh ]] || { echo "no executable run_all.sh in $B (PEERNODE_BENCH_KIT)" >&2; exit 1; }
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >&2
swift build -c release --product peernode >&2
HERE=$PWD
export STEPS=${STEPS:-"mpi-tcp:2 gloo:2 peernode:2 peernode-int8:2 mpi-tcp:4 gloo:4 peernode:4 peernode-int8:4"}
export CMD_peernode="$HERE/scripts/bench-allreduce.sh {N} \"{SIZES}\" {REPS} none"
export CMD_peernode_int8="$HERE/scripts/bench-allreduce.sh {N} \"{SIZES}\" {REPS} int8"
export BASELINE=${BASELINE:-gloo}
exec timeout 5400 "$B/run_all.sh" "${1:-3}" "${2:-10}" "${3:-64 256}" "${4:-6}"

#!/usr/bin/env bash
# Ring order on a two-site network (docs/benchmarks.md, "Ring order"). Needs root (namespaces) and
# a release build (built here if missing: swift build -c release -j 1 --product peernode).
#
#   scripts/bench-ring-order.sh            two sites of three hosts, 1 Gbit/s per host, joined by one
#                                          link of 100 Mbit/s each way with 20 ms added one way; members
#                                          join a1 b1 a2 b2 a3 b3; all-reduce of 16 MiB f32 with the ring
#                                          as joined, as planned from probes, and the best order for
#                                          the configured topology (brute force)
#   scripts/bench-ring-order.sh streams    two hosts over a 1 Gbit/s link with 50 ms one way:
#                                          16 MiB all-reduces with 1, 4 and 16 TCP streams
#   scripts/bench-ring-order.sh join       the six hosts as `peernode run` daemons (DiLoCo, the default
#                                          model), joined a1 b1 a2 b2 a3 b3: how long after the sixth
#                                          join the planned ring is committed, and the outer steps'
#                                          communication time before and after
#
# Environment: REPS (timed all-reduces per order, default 5), RUNS (repeats of the whole
# measurement, default 1), SIZE_MIB (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "bench-ring-order: needs root (network namespaces)" >&2; exit 2; }
BIN=${PEERNODE_BIN:-.build/release/peernode}
[[ -x $BIN ]] || swift build -c release -j 1 --product peernode
REPS=${REPS:-5} RUNS=${RUNS:-1} SIZE_MIB=${SIZE_MIB:-16}
P=pnbro-$$
trap 'scripts/netkit.sh down $P' EXIT

case ${1:-sites} in
  sites)
    # Hosts 1, 3, 5 are site a (a1 a2 a3), 2, 4, 6 site b: joining order 1...6 is a1 b1 a2 b2 a3 b3.
    scripts/netkit.sh up $P 6 2,4,6
    for i in 1 2 3 4 5 6; do scripts/netkit.sh rate $P $i 1gbit; done
    scripts/netkit.sh wan $P 100mbit 20
    hosts=()
    for i in 1 2 3 4 5 6; do hosts+=(--host "$P-h$i@10.77.0.$((10 + i))@$([[ $((i % 2)) == 1 ]] && echo a || echo b)"); done
    for ((r = 1; r <= RUNS; r++)); do
      timeout 900 $BIN bench ring-order "${hosts[@]}" --site-mbps 1000 --wan-mbps 100 --wan-delay-ms 20 \
        --size-mib "$SIZE_MIB" --reps "$REPS"
    done
    ;;
  streams)
    scripts/netkit.sh up $P 2 2
    scripts/netkit.sh wan $P 1gbit 50
    for s in 1 4 16; do
      echo "# streams=$s"
      timeout 900 $BIN bench ring-order --host "$P-h1@10.77.0.11@a" --host "$P-h2@10.77.0.12@b" \
        --site-mbps 1000 --wan-mbps 1000 --wan-delay-ms 50 --size-mib "$SIZE_MIB" --reps "$REPS" --streams $s
    done
    ;;
  join)
    scripts/netkit.sh up $P 6 2,4,6
    for i in 1 2 3 4 5 6; do scripts/netkit.sh rate $P $i 1gbit; done
    scripts/netkit.sh wan $P 100mbit 20
    LOG=$(mktemp -d)
    export PEERNODE_CLUSTER_KEY=bench-ring-order-$$-0123456789abcdef
    start() {
      local i=$1; shift
      ip netns exec $P-h$i $BIN run --listen 0.0.0.0:7100 --data-listen 0.0.0.0:7200 --advertise 10.77.0.$((10 + i)) \
        --min-peers 6 --inner-steps 10 --outer-steps 60 --shard-count 6 --shard-index $((i - 1)) --no-status "$@" \
        >"$LOG/h$i.out" 2>"$LOG/h$i.err" &
    }
    # The views host 1 committed with six nodes: "SECONDS-SINCE-START RING-OR-VIEW-IDS".
    views6() { grep -a "view committed" "$LOG/h1.err" | awk -v t0="$t0" '{ if (match($0, /\[[^]]*\]/)) { v = substr($0, RSTART, RLENGTH); n = split(v, a, ","); if (n == 6) print v } }'; }
    t0=$(date +%s.%N)
    start 1
    for i in 2 3 4 5 6; do
      until grep -q "ready id=" "$LOG/h$((i - 1)).out" 2>/dev/null; do sleep 0.05; done
      start $i --seed 10.77.0.11:7100
      until grep -aq "registered with the cluster" "$LOG/h$i.err" 2>/dev/null; do sleep 0.05; done
    done
    # Site of each id (ready line), to count how often a ring crosses.
    declare -A site
    for i in 1 2 3 4 5 6; do
      until grep -q "ready id=" "$LOG/h$i.out"; do sleep 0.05; done
      id=$(grep -o "ready id=[0-9a-f]*" "$LOG/h$i.out" | cut -d= -f2); site[$id]=$((i % 2))
    done
    crossings() {  # "[id, id, ...]" -> crossings of that ring
      local ids=(${1//[\[\],]/ }) n=0 k
      for ((k = 0; k < ${#ids[@]}; k++)); do
        [[ ${site[${ids[k]}]} != "${site[${ids[(k + 1) % ${#ids[@]}]}]}" ]] && n=$((n + 1))
      done
      echo $n
    }
    joined_at="" planned_at="" deadline=$(( $(date +%s) + 300 ))
    while [[ -z $planned_at ]] && (( $(date +%s) < deadline )); do
      last=""
      while read -r line; do last=$line; done < <(grep -a "view committed" "$LOG/h1.err" | grep -o "\[[^]]*\]$")
      if [[ -n $last && $(echo "$last" | tr -cd , | wc -c) == 5 ]]; then
        now=$(date +%s.%N)
        [[ -z $joined_at ]] && { joined_at=$now; echo "six joined: ring $last crosses $(crossings "$last") times"; }
        if [[ $(crossings "$last") == 2 ]]; then planned_at=$now; echo "planned: ring $last crosses 2 times"; fi
      fi
      sleep 0.05
    done
    [[ -n $planned_at ]] || { echo "no planned ring within 300 s" >&2; exit 1; }
    echo "replan join_to_planned_s=$(echo "$planned_at - $joined_at" | bc) (the sixth member's view to the planned one, as host 1 logged them)"
    until grep -q "revision=60 " "$LOG/h1.out" 2>/dev/null || (( $(date +%s) > deadline )); do sleep 0.5; done
    # comm_s of host 1's outer steps of six members, per view epoch: count, median (seconds).
    grep "^outer" "$LOG/h1.out" | grep " peers=6 " | sed -E 's/.* epoch=([0-9]+) .* comm_s=([0-9.e+-]+) .*/\1 \2/' | sort -k1,1n -k2,2g \
      | awk '{ v[$1] = v[$1] " " $2; n[$1]++ } END { for (e in n) { split(substr(v[e], 2), a, " "); print "outer_steps epoch=" e " steps=" n[e] " comm_s_median=" a[int((n[e] + 1) / 2)] } }' | sort -t= -k2,2n
    grep -a "link probe:" "$LOG/h6.err" | head -2 | sed 's/.*\(link probe:\)/host 6 (the last joiner) \1/'
    kill $(jobs -p) 2>/dev/null || true
    rm -rf "$LOG"
    ;;
  *) echo "usage: bench-ring-order.sh [sites|streams|join]" >&2; exit 2 ;;
esac

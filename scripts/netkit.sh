#!/usr/bin/env bash
# A virtual network of N hosts on one machine, for tests that need real addresses, links that can be
# cut, and a network that can split in two (docs/netkit.md). Needs root and iproute2.
#
#   netkit.sh up PREFIX N [B]      switch namespace PREFIX-sw (bridges a and b joined by a trunk) and
#                                  host namespaces PREFIX-h1..hN, host i at 10.77.0.(10+i)/24; the hosts
#                                  in the comma-separated list B (e.g. 3,4) on bridge b, the others on a
#   netkit.sh side PREFIX I a|b    moves host I's port to bridge a or b
#   netkit.sh split PREFIX         takes the trunk between the bridges down: side a and side b part
#   netkit.sh join PREFIX          brings the trunk up again
#   netkit.sh cut PREFIX I         takes host I's link down (at the switch: the host sees no carrier)
#   netkit.sh heal PREFIX I        brings it up again
#   netkit.sh exec PREFIX I CMD... runs CMD in host I's namespace
#   netkit.sh addr PREFIX I        prints host I's address
#   netkit.sh ns PREFIX I          prints host I's namespace name
#   netkit.sh wan PREFIX RATE MS   turns the trunk into a WAN link through a router namespace
#                                  PREFIX-rt: RATE each way (tc tbf, e.g. 100mbit) and MS milliseconds
#                                  added one way (scripts/delayline.c, a userspace delaying wire)
#   netkit.sh rate PREFIX I RATE   limits host I's link to RATE each way (tc tbf, e.g. 1gbit)
#   netkit.sh pair PREFIX I J RATE limits what host I sends to host J to RATE (tc htb + u32 on I's
#                                  eth0; replaces `rate` on host I's sending side); `pair ... off` lifts it
#   netkit.sh down PREFIX          deletes PREFIX's namespaces (and whatever runs in them), and those of
#                                  dead runs of the same family; idempotent
#
# PREFIX is FAMILY-PID or FAMILY-PID-TAG (FAMILY: a lower-case letter and up to 11 more letters or
# digits; PID: the process that owns the run; TAG: up to 8 letters or digits), e.g. pnk-4242 or
# pnk-4242-s2. Names are unique per run, so parallel or crashed runs never collide, and a run whose
# PID is gone is known to be dead. The kit creates namespaces only, named PREFIX-sw, PREFIX-rt, PREFIX-hI;
# every interface lives inside them, none in the root namespace, and `down` deletes nothing else.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin

die() { echo "netkit: $*" >&2; exit 2; }

prefix_ok() {
  [[ $1 =~ ^[a-z][a-z0-9]{0,11}-[0-9]{1,10}(-[a-z0-9]{1,8})?$ ]] || die "bad PREFIX '$1' (FAMILY-PID or FAMILY-PID-TAG, e.g. pnk-$$)"
}
host_ok() {
  if [[ ! $1 =~ ^[1-9][0-9]{0,2}$ ]] || (( $1 > 200 )); then die "bad host number '$1' (1...200)"; fi
}
need_root() {
  [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
  command -v ip >/dev/null || die "needs iproute2 (ip); scripts/install-deps.sh installs it"
}
sw() { ip -n "$PREFIX-sw" "$@"; }
host_exists() { [[ -e /run/netns/$PREFIX-h$1 ]] || die "no host $1 in $PREFIX (netkit.sh up first)"; }

# The namespaces that belong to run PREFIX: exactly PREFIX-sw and PREFIX-hI.
own_namespaces() {
  local name
  for name in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ $name =~ ^${PREFIX}-(sw|rt|h[0-9]+)$ ]] && echo "$name"
  done
  return 0
}

# Namespaces of the same family whose owning PID is gone (a crashed or killed run).
dead_family_namespaces() {
  local family=${PREFIX%%-*} name pid
  for name in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ $name =~ ^${family}-([0-9]+)(-[a-z0-9]{1,8})?-(sw|rt|h[0-9]+)$ ]] || continue
    pid=${BASH_REMATCH[1]}
    [[ -d /proc/$pid ]] || echo "$name"
  done
  return 0
}

delete_namespaces() {
  local name pid
  for name in "$@"; do
    # A process still inside would keep the namespace's interfaces alive after the name is gone.
    for pid in $(ip netns pids "$name" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$name" 2>/dev/null || true
  done
}

cmd_up() {
  local n=$1 sides=${2:-} i side
  if [[ ! $n =~ ^[1-9][0-9]{0,2}$ ]] || (( n > 200 )); then die "bad host count '$n' (1...200)"; fi
  [[ -z $sides || $sides =~ ^[0-9]+(,[0-9]+)*$ ]] || die "bad side-b list '$sides' (e.g. 3,4)"
  [[ -z $(own_namespaces) ]] || die "$PREFIX exists already (netkit.sh down $PREFIX first)"
  # A half-built network is taken down again (a failed command ends the script: set -e).
  built=0
  trap '[[ ${built:-0} == 1 ]] || delete_namespaces $(own_namespaces)' EXIT
  ip netns add "$PREFIX-sw"
  sw link set lo up
  # Two bridges and the trunk between them, all inside the switch namespace. STP off (the
  # default): ports forward at once.
  sw link add bra type bridge
  sw link add brb type bridge
  sw link add tra type veth peer name trb
  sw link set tra master bra
  sw link set trb master brb
  local dev
  for dev in bra brb tra trb; do sw link set "$dev" up; done
  for ((i = 1; i <= n; i++)); do
    ip netns add "$PREFIX-h$i"
    ip -n "$PREFIX-h$i" link set lo up
    # The switch port pI and the host's eth0 are created as one veth pair, directly in the two
    # namespaces: nothing passes through the root namespace.
    sw link add "p$i" type veth peer name eth0 netns "$PREFIX-h$i"
    side=a
    [[ ,$sides, == *,$i,* ]] && side=b
    sw link set "p$i" master "br$side"
    sw link set "p$i" up
    ip -n "$PREFIX-h$i" addr add "10.77.0.$((10 + i))/24" dev eth0
    ip -n "$PREFIX-h$i" link set eth0 up
  done
  built=1
}

cmd_side() {
  local i=$1 side=$2
  host_ok "$i"; host_exists "$i"
  [[ $side == a || $side == b ]] || die "side must be a or b"
  sw link set "p$i" master "br$side"
}

# tbf on DEV (in namespace NS) at RATE, a tc rate such as 100mbit or 1gbit. The bucket holds 2 ms
# of traffic (at least 64 KB, so that veth's 64 KB GSO packets pass whole); the queue holds
# QUEUE_MS of it, then drops, like a router's buffer.
shape() {
  local ns=$1 dev=$2 rate=$3 queue_ms=$4 bits
  [[ $rate =~ ^([0-9]+)(kbit|mbit|gbit)$ ]] || die "bad rate '$rate' (e.g. 500kbit, 100mbit, 1gbit)"
  case ${BASH_REMATCH[2]} in kbit) bits=$((BASH_REMATCH[1] * 1000)) ;; mbit) bits=$((BASH_REMATCH[1] * 1000000)) ;;
    gbit) bits=$((BASH_REMATCH[1] * 1000000000)) ;; esac
  local burst=$((bits / 8 / 500))
  (( burst >= 65536 )) || burst=65536
  ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "$rate" burst "$burst" latency "${queue_ms}ms"
}

cmd_rate() {
  local i=$1 rate=$2
  host_ok "$i"; host_exists "$i"
  shape "$PREFIX-sw" "p$i" "$rate" 20      # switch -> host
  shape "$PREFIX-h$i" eth0 "$rate" 20      # host -> switch
}

# Host I -> host J at RATE: htb on I's eth0, traffic to J's address in class 1:(100+J), the rest
# in the default class 1:1 (no practical limit). Several pairs from one host add classes.
cmd_pair() {
  local i=$1 j=$2 rate=$3 ns=$PREFIX-h$1
  host_ok "$i"; host_ok "$j"; host_exists "$i"
  if [[ $rate == off ]]; then
    ip netns exec "$ns" tc filter del dev eth0 parent 1: prio $((100 + j)) 2>/dev/null || true
    ip netns exec "$ns" tc class del dev eth0 classid "1:$((100 + j))" 2>/dev/null || true
    return
  fi
  [[ $rate =~ ^[0-9]+(kbit|mbit|gbit)$ ]] || die "bad rate '$rate' (e.g. 500kbit, 100mbit, 1gbit; or off)"
  if [[ $(ip netns exec "$ns" tc qdisc show dev eth0) != *"htb 1:"* ]]; then
    ip netns exec "$ns" tc qdisc replace dev eth0 root handle 1: htb default 1
    ip netns exec "$ns" tc class add dev eth0 parent 1: classid 1:1 htb rate 100gbit burst 1mb cburst 1mb quantum 60000
  fi
  ip netns exec "$ns" tc class replace dev eth0 parent 1: classid "1:$((100 + j))" htb rate "$rate" burst 64kb cburst 64kb quantum 60000
  ip netns exec "$ns" tc filter del dev eth0 parent 1: prio $((100 + j)) 2>/dev/null || true
  ip netns exec "$ns" tc filter add dev eth0 parent 1: protocol ip prio $((100 + j)) u32 \
    match ip dst "10.77.0.$((10 + j))/32" flowid "1:$((100 + j))"
}

# The delay line is built from scripts/delayline.c on first use and kept by the source's hash.
delayline_binary() {
  local src here hash bin
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  src=$here/delayline.c
  hash=$(sha256sum "$src" | cut -c1-16)
  bin=${TMPDIR:-/tmp}/netkit-delayline-$hash
  if [[ ! -x $bin ]]; then
    local cc=${CC:-cc}
    command -v "$cc" >/dev/null || cc=clang
    "$cc" -O2 -Wall -o "$bin.$$" "$src" || die "cannot build $src (needs a C compiler: cc or clang)"
    mv -f "$bin.$$" "$bin"
  fi
  echo "$bin"
}

cmd_wan() {
  local rate=$1 ms=$2 bin rt=$PREFIX-rt
  [[ $ms =~ ^[0-9]{1,4}$ ]] || die "bad delay '$ms' (milliseconds, 0...9999)"
  [[ -e /run/netns/$PREFIX-sw ]] || die "no $PREFIX (netkit.sh up first)"
  [[ ! -e /run/netns/$rt ]] || die "$PREFIX has a WAN already"
  bin=$(delayline_binary)
  # The trunk tra=trb becomes tra=ua [rt: bridge wa: ua, tapa] delayline [bridge wb: tapb, ub] ub=trb:
  # `split` and `join` still take tra down and up.
  ip netns add "$rt"
  ip -n "$rt" link set lo up
  sw link del tra
  sw link add tra type veth peer name ua netns "$rt"
  sw link add trb type veth peer name ub netns "$rt"
  sw link set tra master bra
  sw link set trb master brb
  local dev
  for dev in wa wb; do ip -n "$rt" link add "$dev" type bridge; done
  ip -n "$rt" tuntap add dev tapa mode tap
  ip -n "$rt" tuntap add dev tapb mode tap
  ip -n "$rt" link set ua master wa
  ip -n "$rt" link set tapa master wa
  ip -n "$rt" link set tapb master wb
  ip -n "$rt" link set ub master wb
  for dev in wa wb ua ub tapa tapb; do ip -n "$rt" link set "$dev" up; done
  for dev in tra trb; do sw link set "$dev" up; done
  # The rate each way, where frames leave a site's bridge for the WAN (a 50 ms queue).
  shape "$PREFIX-sw" tra "$rate" 50
  shape "$PREFIX-sw" trb "$rate" 50
  # The delay line runs inside the router namespace: `down` kills it with the namespace, and it
  # stops by itself when its TAP devices go away.
  ip netns exec "$rt" setsid "$bin" tapa tapb $((ms * 1000)) </dev/null >/dev/null 2>"${TMPDIR:-/tmp}/netkit-$PREFIX.delayline.log" &
  local tries=0
  until [[ $(ip -n "$rt" -br link show tapa 2>/dev/null) == *LOWER_UP* ]]; do
    (( ++tries < 100 )) || die "the delay line did not start (see ${TMPDIR:-/tmp}/netkit-$PREFIX.delayline.log)"
    sleep 0.05
  done
}

cmd_down() {
  # shellcheck disable=SC2046
  delete_namespaces $(own_namespaces) $(dead_family_namespaces)
  rm -f "${TMPDIR:-/tmp}/netkit-$PREFIX.delayline.log"
}

[[ $# -ge 2 ]] || { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
sub=$1 PREFIX=$2
shift 2
prefix_ok "$PREFIX"
case $sub in
  up)    need_root; [[ $# -eq 1 || $# -eq 2 ]] || die "usage: up PREFIX N [B]"; cmd_up "$@" ;;
  side)  need_root; [[ $# -eq 2 ]] || die "usage: side PREFIX I a|b"; cmd_side "$1" "$2" ;;
  split) need_root; sw link set tra down ;;
  join)  need_root; sw link set tra up ;;
  cut)   need_root; [[ $# -eq 1 ]] || die "usage: cut PREFIX I"; host_ok "$1"; host_exists "$1"; sw link set "p$1" down ;;
  heal)  need_root; [[ $# -eq 1 ]] || die "usage: heal PREFIX I"; host_ok "$1"; host_exists "$1"; sw link set "p$1" up ;;
  exec)  need_root; [[ $# -ge 2 ]] || die "usage: exec PREFIX I CMD..."; host_ok "$1"; host_exists "$1"
         ns=$PREFIX-h$1; shift; exec ip netns exec "$ns" "$@" ;;
  addr)  [[ $# -eq 1 ]] || die "usage: addr PREFIX I"; host_ok "$1"; echo "10.77.0.$((10 + $1))" ;;
  ns)    [[ $# -eq 1 ]] || die "usage: ns PREFIX I"; host_ok "$1"; echo "$PREFIX-h$1" ;;
  wan)   need_root; [[ $# -eq 2 ]] || die "usage: wan PREFIX RATE MS"; cmd_wan "$1" "$2" ;;
  rate)  need_root; [[ $# -eq 2 ]] || die "usage: rate PREFIX I RATE"; cmd_rate "$1" "$2" ;;
  pair)  need_root; [[ $# -eq 3 ]] || die "usage: pair PREFIX I J RATE|off"; cmd_pair "$1" "$2" "$3" ;;
  down)  need_root; cmd_down ;;
  *)     die "unknown command '$sub' (up, side, split, join, cut, heal, wan, rate, pair, exec, addr, ns, down)" ;;
esac

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
#   netkit.sh down PREFIX          deletes PREFIX's namespaces (and whatever runs in them), and those of
#                                  dead runs of the same family; idempotent
#
# PREFIX is FAMILY-PID or FAMILY-PID-TAG (FAMILY: a lower-case letter and up to 11 more letters or
# digits; PID: the process that owns the run; TAG: up to 8 letters or digits), e.g. pnk-4242 or
# pnk-4242-s2. Names are unique per run, so parallel or crashed runs never collide, and a run whose
# PID is gone is known to be dead. The kit creates namespaces only, named PREFIX-sw and PREFIX-hI;
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
    [[ $name =~ ^${PREFIX}-(sw|h[0-9]+)$ ]] && echo "$name"
  done
  return 0
}

# Namespaces of the same family whose owning PID is gone (a crashed or killed run).
dead_family_namespaces() {
  local family=${PREFIX%%-*} name pid
  for name in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ $name =~ ^${family}-([0-9]+)(-[a-z0-9]{1,8})?-(sw|h[0-9]+)$ ]] || continue
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

cmd_down() {
  # shellcheck disable=SC2046
  delete_namespaces $(own_namespaces) $(dead_family_namespaces)
}

[[ $# -ge 2 ]] || { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
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
  down)  need_root; cmd_down ;;
  *)     die "unknown command '$sub' (up, side, split, join, cut, heal, exec, addr, ns, down)" ;;
esac

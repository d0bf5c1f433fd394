#!/usr/bin/env bash
# Checks deploy/ offline, as far as a machine without a Kubernetes cluster or a container runtime
# can:
#   - deploy/kubernetes/*.yaml against the Kubernetes API schemas (kubernetes-validate --strict;
#     the PyPI package ships the schemas, nothing is downloaded),
#   - deploy/compose.yaml against the compose specification (check-jsonschema's vendored copy),
#   - every option the manifests and the compose file pass, and every key of the ConfigMap's
#     config file, is an option of `peernode run --help`,
#   - the StatefulSet's start script gives each pod its seeds, shard and name, and the argument
#     lists it and the compose file build pass peernode's own settings validation,
#   - every metric the Grafana dashboard queries is exported by a live peer's /metrics.
# usage: scripts/check-deploy.sh        (PEERNODE_BIN: default .build/debug/peernode)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${PEERNODE_BIN:-.build/debug/peernode}")
[[ -x $BIN ]] || { echo "check-deploy: no $BIN (swift build first)" >&2; exit 1; }
python3 -c 'import kubernetes_validate, check_jsonschema, yaml' 2>/dev/null \
  || { echo "check-deploy: kubernetes-validate or check-jsonschema is missing (scripts/install-deps.sh installs them)" >&2; exit 1; }
command -v curl >/dev/null || { echo "check-deploy: curl is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/peernode-deploy-check.XXXXXX")
PEER=
cleanup() { [[ -n $PEER ]] && kill -TERM "$PEER" 2>/dev/null && wait "$PEER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# Run as modules: a user install of the packages need not have put their commands on PATH.
python3 -m kubernetes_validate --strict --quiet deploy/kubernetes/*.yaml
python3 -m check_jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml >/dev/null \
  || { python3 -m check_jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml; exit 1; }
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' deploy/grafana/peernode-dashboard.json

"$BIN" run --help >"$WORK/run-help.txt"
"$BIN" coordinator --help >"$WORK/coordinator-help.txt"

# Options and config keys, and the argument lists to try: from the parsed YAML (comments, where
# the kubectl and docker commands live, are not part of it).
python3 - "$WORK" deploy/kubernetes/*.yaml deploy/compose.yaml <<'PY'
import json, os, re, sys, yaml
work, files = sys.argv[1], sys.argv[2:]
known = set(re.findall(r"(?<![\w-])--(?:\[no-\])?([a-z][a-z0-9-]*)", open(os.path.join(work, "run-help.txt")).read()))
known |= {"no-status"}
problems, used = [], set()
def strings(node):
    if isinstance(node, dict):
        for v in node.values(): yield from strings(v)
    elif isinstance(node, list):
        for v in node: yield from strings(v)
    elif isinstance(node, str):
        yield node
for path in files:
    for doc in yaml.safe_load_all(open(path)):
        if not doc: continue
        for text in strings(doc):
            used.update((path, f) for f in re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text))
            if text.lstrip().startswith("{"):
                used.update((path, "config key " + k) for k in json.loads(text))
        if doc.get("kind") == "ConfigMap":
            for name, text in doc["data"].items():
                open(os.path.join(work, name), "w").write(text)
        if path.endswith("compose.yaml"):
            for name, service in doc["services"].items():
                if service.get("command", [None])[0] == "run":
                    json.dump(service["command"], open(os.path.join(work, f"compose-{name}.json"), "w"))
for path, flag in sorted(used):
    name = flag.removeprefix("config key ")
    if name not in known:
        problems.append(f"{path}: {flag!r} is not an option of `peernode run`")
for p in problems: print("check-deploy: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY

# A command line is accepted when peernode gets past its settings to the cluster key (which
# these checks withhold): parsed, config file read, every value validated, nothing started.
accepts() {
  local out
  out=$(env -u PEERNODE_CLUSTER_KEY PEERNODE_CLUSTER_KEY= "$BIN" "$@" 2>&1 || true)
  grep -q "cluster key" <<<"$out" && ! grep -q "Usage:" <<<"$out" \
    || { echo "check-deploy: peernode refused: $*"; echo "$out" | head -5; return 1; } >&2
}
# The StatefulSet's start script for pods 0 and 2 of 3, with the config path pointed at the
# ConfigMap's file and peernode replaced by a recorder of its arguments.
sed -e "s#/etc/peernode/config/peernode.json#$WORK/peernode.json#" -e "s#/usr/local/bin/peernode#$WORK/record#" \
  "$WORK/start.sh" >"$WORK/start-local.sh"
printf '#!/bin/sh\nfor a in "$@"; do printf "%%s\\n" "$a"; done >"$ARGS_OUT"\n' >"$WORK/record"
chmod +x "$WORK/record"
for pod in 0 2; do
  ARGS_OUT=$WORK/args$pod POD_NAME=peernode-$pod POD_NAMESPACE=training PEERNODE_REPLICAS=3 sh "$WORK/start-local.sh"
  mapfile -t args <"$WORK/args$pod"
  accepts "${args[@]}"
  line=" ${args[*]} "
  others=$([[ $pod == 0 ]] && echo "peernode-1.peernode.training.svc.cluster.local:7700,peernode-2.peernode.training.svc.cluster.local:7700" \
                           || echo "peernode-0.peernode.training.svc.cluster.local:7700,peernode-1.peernode.training.svc.cluster.local:7700")
  for want in "--seed $others" "--advertise peernode-$pod.peernode.training.svc.cluster.local" "--shard-index $pod --shard-count 3"; do
    [[ $line == *" $want "* ]] || { echo "check-deploy: start.sh for peernode-$pod lacks '$want': $line" >&2; exit 1; }
  done
  if [[ $pod == 0 ]]; then [[ $line == *" --found-after-join-timeout "* ]] || { echo "check-deploy: peernode-0 never founds" >&2; exit 1; }
  else [[ $line != *" --found-after-join-timeout "* ]] || { echo "check-deploy: peernode-$pod may found a second cluster" >&2; exit 1; }; fi
done
for file in "$WORK"/compose-*.json; do
  mapfile -t args < <(python3 -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))))' "$file")
  accepts "${args[@]}"
done

# The dashboard's metrics against what a live peer exports after an outer step.
PEERNODE_CLUSTER_KEY=check-deploy-cluster-key-0123456789 "$BIN" run --inner-steps 2 --log-level warning \
  >"$WORK/peer.out" 2>"$WORK/peer.err" &
PEER=$!
for _ in $(seq 1 300); do grep -q '^outer ' "$WORK/peer.out" 2>/dev/null && break; sleep 0.2; done
grep -q '^outer ' "$WORK/peer.out" || { echo "check-deploy: the peer took no outer step in 60 s" >&2; cat "$WORK/peer.err" >&2; exit 1; }
PORT=$(grep -o 'status_port=[0-9]*' "$WORK/peer.out" | cut -d= -f2)
curl -fsS "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt"
python3 - deploy/grafana/peernode-dashboard.json "$WORK/metrics.txt" <<'PY'
import json, re, sys
dashboard, exported = json.load(open(sys.argv[1])), set()
for line in open(sys.argv[2]):
    if line.strip() and not line.startswith("#"):
        exported.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str): yield v
            else: yield from exprs(v)
    elif isinstance(node, list):
        for v in node: yield from exprs(v)
queried = {m for e in exprs(dashboard) for m in re.findall(r"\bpeernode_[a-z0-9_]+", e)}
missing = sorted(queried - exported)
if not queried or missing:
    print(f"check-deploy: the dashboard queries metrics /metrics does not export: {missing or 'none queried'}", file=sys.stderr)
    sys.exit(1)
print(f"check-deploy: {len(queried)} dashboard metrics, all exported")
PY
echo "check-deploy: manifests, compose file, options and dashboard OK"

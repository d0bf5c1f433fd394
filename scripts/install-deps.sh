#!/usr/bin/env bash
# Installs the system libraries peernode links against, iproute2 for the network tests, Chromium
# and curl for the status page and deploy checks, and the Python packages the tests use, each
# only when it is missing.
# Called by the README's commands and by .ci/run; safe to run again.
set -euo pipefail
need=()
for p in libopenblas-dev libzstd-dev libssl-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
# `openssl` for the TLS tests' certificates (Tests/TransportTests/LinkSecurityTests.swift) and
# for operators making theirs (docs/operations.md "Link security").
command -v openssl >/dev/null || need+=(openssl)
# `ip` for scripts/netkit.sh (the partition tests' virtual network).
command -v ip >/dev/null || need+=(iproute2)
# A real browser for scripts/check-status-page.sh; curl for scripts/check-deploy.sh.
command -v chromium >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${need[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  echo "install-deps: apt-get install ${need[*]}" >&2
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
# The reference safetensors implementation, which the weights tests read exports with
# (Tests/PeerNodeIntegrationTests/WeightsProcessTests.swift); only when it is missing.
if ! command -v python3 >/dev/null; then
  echo "install-deps: python3 is needed for the weights tests (apt-get install python3 python3-pip)" >&2
  exit 1
fi
pip_install() {
  echo "install-deps: pip install $*" >&2
  # Debian's system python refuses plain pip installs (PEP 668); a user install is allowed.
  python3 -m pip install --quiet "$@" >&2 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages "$@" >&2
}
python3 -c "import numpy, safetensors.numpy" 2>/dev/null || pip_install safetensors numpy
# The offline validators of scripts/check-deploy.sh: the Kubernetes API schemas and the compose
# specification ship inside these packages (nothing is downloaded when they run).
python3 -c "import kubernetes_validate, check_jsonschema, yaml" 2>/dev/null || pip_install kubernetes-validate check-jsonschema

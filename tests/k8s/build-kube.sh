#!/usr/bin/env bash
# Build (or reuse) the Kubernetes the contract tests run on, each a Go tools module of tests/k8s/tools built by
# tools/build.sh with the Go module proxy and cached per machine under /var/cache/graylane/tools (rebuilt only
# when missing or when its recipe changes):
#   etcd  etcd v3.7.3                   (Debian bookworm's 3.4.23 is older than kube-apiserver 1.37 relies on)
#   kwok  kwok v0.8.0 + its default stages (fake Nodes: pods scheduled there get an IP and go Ready)
#   kube  kube-apiserver, kube-controller-manager, kube-scheduler, kubectl v1.37.2 (k8s.io/kubernetes)
# Prints one "NAME BIN-DIR" line per tool. The tests find the same dirs with `build.sh --cached NAME`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Go from the machine (Debian's golang-go 1.19 is far too old for these modules); flock is util-linux.
command -v go >/dev/null || { echo "build-kube.sh: needs Go >= 1.26 on PATH (https://go.dev/dl/)" >&2; exit 1; }
need=()
command -v flock >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)  # the test clusters make their service-account key with it
command -v ip >/dev/null || need+=(iproute2)      # the pod network route (tests/k8s/cluster.py ensure_pod_network)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Smallest first, so a broken proxy or toolchain shows up before the long kube build.
for tool in etcd kwok kube; do
  start=$(date +%s)
  bin=$(bash "$here/tools/build.sh" "$tool")
  echo "$tool $bin ($(( $(date +%s) - start ))s)"
done

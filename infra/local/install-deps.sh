#!/usr/bin/env bash
# Debian packages used by tests and the demo. Installs only what is missing.
# (etcd and kubectl are no longer Debian's: `make kube` builds them with the rest of the test Kubernetes.)
set -euo pipefail
need=()
# chromium + chromium-driver: the web console's browser test (Playwright launches /usr/bin/chromium)
# docker-registry (CNCF Distribution) + skopeo: `make e2e` pushes real images to a real registry
# util-linux (flock) and iproute2 (ip): the Go tool builds' locks and the test clusters' pod route
for p in prometheus prometheus-alertmanager haproxy hey openssl util-linux iproute2 chromium chromium-driver docker-registry skopeo; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager v1.20.2 from Debian's `kubernetes` source package
# with Debian's Go, offline (GOPROXY=off). Cached per machine: rebuilt only when a binary is missing.
# See shared/research/k8s-api-for-tests.md §7.
set -euo pipefail
KUBE_VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE=${GRAYLANE_KUBE_CACHE:-/var/cache/graylane/kube-$KUBE_VERSION}
BIN="$CACHE/bin"

if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && command -v etcd >/dev/null; then
  echo "kube binaries cached in $BIN"; exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends golang-go etcd-server rsync make openssl \
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >/dev/null
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then exit 0; fi

W="$CACHE/build"; rm -rf "$W"; mkdir -p "$W/apt/lists/partial" "$W/apt/sources.d" "$BIN"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$W/apt/sources.d/debian-src.sources"
else
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$W/apt/sources.d/debian-src.list"
fi
O=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$W/apt/sources.d" -o Dir::State::Lists="$W/apt/lists")
apt-get "${O[@]}" update -qq            # private lists: the system's apt state is untouched
(cd "$W" && apt-get "${O[@]}" source --download-only "kubernetes=$DEB_VERSION" >/dev/null)
(cd "$W" && tar xzf "kubernetes_1.20.5+really$KUBE_VERSION.orig.tar.gz")
cd "$W/kubernetes-$KUBE_VERSION"
# Go >= 1.18 with the vendored reflect2 1.0.1 segfaults on the first CR create: use Debian's versions.
rm -rf vendor/github.com/modern-go/reflect2 vendor/github.com/json-iterator/go
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/json-iterator/go vendor/github.com/json-iterator/go
GOPROXY=off GOFLAGS= GOCACHE="$W/gocache" HOME="$W/home" \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" GOLDFLAGS='-s -w' >"$W/build.log" 2>&1 \
  || { tail -50 "$W/build.log"; exit 1; }
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$BIN/"
cd /; rm -rf "$W"
echo "built kube binaries into $BIN"

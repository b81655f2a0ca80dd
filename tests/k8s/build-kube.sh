#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager v1.20.2 from Debian's `kubernetes` source package
# with Debian's Go, offline (GOPROXY=off). Cached per machine: rebuilt only when a binary is missing or
# was built by an older recipe (RECIPE).
# See shared/research/k8s-api-for-tests.md §7.
set -euo pipefail
KUBE_VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE=${GRAYLANE_KUBE_CACHE:-/var/cache/graylane/kube-$KUBE_VERSION}
BIN="$CACHE/bin"
# Bump when the recipe changes so cached binaries from an older recipe are rebuilt.
RECIPE=2
cached() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] \
    && [ "$(cat "$BIN/RECIPE" 2>/dev/null)" = "$RECIPE" ]
}

if cached && command -v etcd >/dev/null; then
  echo "kube binaries cached in $BIN"; exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends golang-go etcd-server rsync make openssl \
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >/dev/null
if cached; then exit 0; fi

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
# go-openapi's type validator tests "zero value" with reflect.DeepEqual on two reflect.Values. Since Go 1.19
# both "" and reflect.Zero(string) point at the runtime's shared zero buffer, so every empty string in a CR
# is taken for null and refused (422 "must be of type string"). Older Go never matched: only nil is null.
ZERO='reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))'
mapfile -t ZERO_FILES < <(grep -rlF "$ZERO" vendor staging 2>/dev/null || true)
[ "${#ZERO_FILES[@]}" -gt 0 ] || { echo "zero-value check not found: patch outdated" >&2; exit 1; }
sed -i "s/reflect\.DeepEqual(reflect\.Zero(reflect\.TypeOf(data)), reflect\.ValueOf(data))/reflect.ValueOf(data).Kind() == reflect.Invalid/" \
  "${ZERO_FILES[@]}"
echo "patched zero-value check in: ${ZERO_FILES[*]}"
GOPROXY=off GOFLAGS= GOCACHE="$W/gocache" HOME="$W/home" \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" GOLDFLAGS='-s -w' >"$W/build.log" 2>&1 \
  || { tail -50 "$W/build.log"; exit 1; }
for b in kube-apiserver kube-controller-manager; do  # rename, so a running copy is not overwritten in place
  cp "_output/bin/$b" "$BIN/.$b.new" && mv -f "$BIN/.$b.new" "$BIN/$b"
done
echo "$RECIPE" > "$BIN/RECIPE"
cd /; rm -rf "$W"
echo "built kube binaries into $BIN"

#!/usr/bin/env bash
# Build one Go tools module of tests/k8s/tools/NAME with the ordinary `go` client and the Go module proxy,
# cached per machine: the result lives in $GRAYLANE_CACHE/tools/NAME-<key>/bin, where <key> hashes the
# module directory (go.mod, go.sum, recipe.sh, any patches) and this script, so a changed recipe or version
# builds anew and an unchanged one is reused. Prints the bin directory on stdout (logs go to stderr).
#
#   bin=$(bash tests/k8s/tools/build.sh kube)          # e.g. .../tools/kube-3f2a91c0d4e1/bin
#   bin=$(bash tests/k8s/tools/build.sh --cached kube) # the same, but never builds: exit 1 if not built yet
#
# NAME/recipe.sh is sourced in the module directory and sets:
#   PACKAGES=(k8s.io/kubernetes/cmd/kube-apiserver ...)   main packages to build (required)
#   LDFLAGS="..."  TAGS="..."  CGO=0|1                     optional
#   prepare() { ...; }                                     optional: runs before `go build` (e.g. patches)
# Module downloads and compiled packages are shared by every tool (GOMODCACHE, GOCACHE under the cache).
set -euo pipefail
cached_only=false
if [ "${1:-}" = --cached ]; then cached_only=true; shift; fi
name=${1:?usage: build.sh [--cached] NAME}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$here/$name
[ -f "$src/recipe.sh" ] || { echo "build.sh: no recipe $src/recipe.sh" >&2; exit 2; }
root=${GRAYLANE_CACHE:-/var/cache/graylane}
export GOMODCACHE=$root/go/mod GOCACHE=$root/go/build GOFLAGS=-modcacherw GOTOOLCHAIN=${GOTOOLCHAIN:-local}
export GOPROXY=${GOPROXY:-https://proxy.golang.org,direct} GOSUMDB=${GOSUMDB:-sum.golang.org}
# The Go toolchain is part of the recipe too: a machine whose Go changed builds anew.
key=$( (cd "$src" && find . -type f ! -name '*~' | LC_ALL=C sort | xargs sha256sum; sha256sum < "$here/build.sh"
        go env GOVERSION) | sha256sum | cut -c1-12)
out=$root/tools/$name-$key
if [ -f "$out/.done" ]; then echo "$out/bin"; exit 0; fi
if $cached_only; then echo "build.sh: $name is not built for this recipe ($out)" >&2; exit 1; fi

mkdir -p "$root/tools" "$root/go"
exec 9>"$root/tools/.$name.lock"
flock 9                                   # one build of a tool at a time; a second caller waits, then reuses
if [ -f "$out/.done" ]; then echo "$out/bin"; exit 0; fi

PACKAGES=(); LDFLAGS=""; TAGS=""; CGO=0
prepare() { :; }
work=$(mktemp -d "$root/tools/.$name-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -a "$src/." "$work/"
cd "$work"
# shellcheck disable=SC1091
source ./recipe.sh
[ "${#PACKAGES[@]}" -gt 0 ] || { echo "build.sh: $name/recipe.sh sets no PACKAGES" >&2; exit 2; }
start=$(date +%s)
prepare >&2
mkdir -p "$work/out"
CGO_ENABLED=$CGO go build -trimpath -tags "$TAGS" -ldflags "-s -w $LDFLAGS" -o "$work/out/" "${PACKAGES[@]}" >&2
took=$(( $(date +%s) - start ))
rm -rf "$out"; mkdir -p "$out"
mv "$work/out" "$out/bin"
{ echo "name=$name"; echo "key=$key"; echo "seconds=$took"; echo "go=$(go env GOVERSION)"; } > "$out/BUILD"
touch "$out/.done"
echo "build.sh: built $name in ${took}s -> $out/bin" >&2
echo "$out/bin"

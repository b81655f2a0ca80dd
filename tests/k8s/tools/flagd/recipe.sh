# shellcheck shell=bash
# flagd (OpenFeature's CNCF flag daemon), for the flag-stage tests (tests/real/test_flags_flagd.py): graylane
# writes flag definitions in flagd's format and this flagd answers evaluations of them over its API.
#
# v0.11.2: the Go module proxy reachable here serves github.com/open-feature/flagd/flagd at that version only
# (v0.11.0-v0.11.8, v0.12.x and v0.13.x answer 403). It is built as the MAIN module from its own go.mod and
# go.sum (fetched with `go mod download -json`, copied writable), so its requirements (flagd/core v0.10.1,
# whose `fractional` is the one graylane's flag_bucket reproduces) are exactly the released ones. prepare()
# leaves the shell in that copy (build.sh sources it in its own shell), so `go build` below runs there.
MODULE=github.com/open-feature/flagd/flagd
VERSION=v0.11.2
PACKAGES=(.)
LDFLAGS="-X main.version=${VERSION#v} -X main.commit=graylane-tests -X main.date=graylane-tests"

prepare() {
  local dir
  dir=$(go mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || { echo "flagd recipe: go mod download $MODULE@$VERSION gave no directory" >&2; return 1; }
  cp -a "$dir" ./src
  chmod -R u+w ./src
  cd ./src
}

# Traefik v3: the data plane of the traefik (traefik.io) and gateway-api routers' real tests (tests/traefik).
# v3.6 is the newest 3.x whose module builds as the main module: 3.7's go.mod replaces a nested module by a
# local path, which the module zip does not satisfy.
#
# Built as the MAIN module from its own go.mod (fetched with `go mod download -json`, copied writable),
# so its `replace` directives (forks of gorilla/mux, go-http-auth, minheap, ...) apply; a tools module
# that only requires Traefik would ignore them and build something else. prepare() leaves the shell in
# that copy (build.sh runs it in its own shell, not a subshell), so `go build` below runs there. The CRD files under
# tests/k8s/crds are pinned at the same version.
MODULE=github.com/traefik/traefik/v3
VERSION=v3.6.12
PACKAGES=(./cmd/traefik)
LDFLAGS="-X $MODULE/pkg/version.Version=${VERSION#v} -X $MODULE/pkg/version.BuildDate=graylane-tests"

prepare() {
  local dir
  dir=$(go mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || { echo "recipe: go mod download $MODULE@$VERSION gave no directory" >&2; return 1; }
  cp -a "$dir" ./src
  chmod -R u+w ./src
  # The web UI is built by yarn and not part of the module zip; webui/embed.go embeds webui/static, so
  # make sure it holds a page (the tests never open the dashboard).
  if [ ! -f ./src/webui/static/index.html ]; then
    mkdir -p ./src/webui/static
    echo '<!doctype html><title>Traefik</title><p>web UI not built (graylane test build)</p>' \
      > ./src/webui/static/index.html
  fi
  cd ./src
}

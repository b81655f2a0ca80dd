# shellcheck shell=bash
# kwok v0.8.0 (sourced by tests/k8s/tools/build.sh): only the controller binary; the tests start it
# themselves against their apiserver, so kwokctl (a cluster manager) is not needed.
PACKAGES=(sigs.k8s.io/kwok/cmd/kwok)

# Standalone kwok plays only the stages its --config gives it. Ship the ones kwokctl configures by default
# (pkg/kwokctl/runtime/cluster.go: node-initialize, node-heartbeat-with-lease, pod-ready/complete/delete),
# taken from the module itself, next to the binary: bin/kwok-stages.yaml.
prepare() {
  local dir
  go mod download sigs.k8s.io/kwok  # `go list -m` names the directory only once the module is downloaded
  dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  [ -d "$dir/kustomize/stage" ] || { echo "kwok recipe: no stages in '$dir'" >&2; return 1; }
  mkdir -p out
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
               pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"; cat "$dir/kustomize/stage/$stage.yaml"
  done > out/kwok-stages.yaml
}

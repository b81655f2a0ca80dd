# shellcheck shell=bash
# Kubernetes v1.37.2 control plane for the contract tests (sourced by tests/k8s/tools/build.sh).
# Only the binaries the tests run: kwok replaces the kubelet, and kubectl (with its built-in kustomize)
# replaces Debian's 1.20 kubernetes-client for the manifest dry-runs.
KUBE_VERSION=v1.37.2
PACKAGES=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubectl
)
# The tags and version stamps of upstream's hack/lib/golang.sh + version.sh: without the stamps /version
# says v0.0.0-master and kubectl warns about version skew. No buildDate/gitCommit: the result stays the
# same for the same recipe.
TAGS=selinux,notest,grpcnotrace
LDFLAGS=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=37 -X $pkg.gitTreeState=clean"
done

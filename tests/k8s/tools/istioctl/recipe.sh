# istioctl from the istio.io/istio module (no replace directives in its go.mod at this version, so it builds
# as a dependency of this tools module; go.mod's versions equal istio's own). The same pseudo-version pins
# the Istio CRDs under tests/k8s/crds/. Used offline by tests/k8s/istio_validate.py (`istioctl validate`).
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad
PACKAGES=(istio.io/istio/istioctl/cmd/istioctl)
TAGS="vtprotobuf,disable_pgv"              # upstream's STANDARD_TAGS (Makefile.core.mk), as a release istioctl
LDFLAGS="-X istio.io/istio/pkg/version.buildVersion=$ISTIO_VERSION
 -X istio.io/istio/pkg/version.buildGitRevision=${ISTIO_VERSION##*-}
 -X istio.io/istio/pkg/version.buildStatus=Clean"

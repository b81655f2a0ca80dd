# graylane — the two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup deps test e2e unit lint bench tools kube crds istioctl traefik flagd demo clean

$(BIN)/graylane: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/graylane  ## create .venv with graylane installed

deps:  ## Debian packages the tests and the demo use
	bash infra/local/install-deps.sh

tools: deps  ## build (or reuse) every Go tool the tests run, two builds at a time (a cold machine's longest step)
	bash tests/k8s/tools/build-all.sh

kube:  ## build (or reuse the cached) test Kubernetes: etcd, kube-apiserver/-controller-manager/-scheduler, kubectl, kwok
	bash tests/k8s/build-kube.sh

crds: setup  ## fetch the pinned upstream CRDs (tests/k8s/upstream-crds.txt) into the cache
	$(BIN)/python -m tests.k8s.upstream_crds

istioctl:  ## build (or reuse the cached) istioctl: Istio's validation of the objects graylane writes
	@bin=$$(bash tests/k8s/tools/build.sh istioctl) && echo "istioctl in $$bin"

traefik:  ## build (or reuse the cached) Traefik v2.11 and v3 from their Go modules, for tests/traefik
	@for t in traefik-v2 traefik-v3; do bin=$$(bash tests/k8s/tools/build.sh $$t) && echo "$$t in $$bin" || exit 1; done

flagd:  ## build (or reuse the cached) flagd v0.11.2 from its Go module, for the flag-stage tests
	@bin=$$(bash tests/k8s/tools/build.sh flagd) && echo "flagd in $$bin"

test: setup deps tools kube crds istioctl traefik flagd lint  ## everything the tests need, then the whole suite (tests/e2e included)
	$(BIN)/pytest

e2e: setup deps kube crds traefik  ## graylane as deployed (infra/k8s) driving seed 000 on Traefik v2.11 (tests/e2e)
	$(BIN)/pytest tests/e2e -p no:cacheprovider -vv  # -vv: one line per test despite addopts -q

unit: setup  ## only the pure tests (no servers)
	$(BIN)/pytest tests/unit tests/property

lint: setup  ## the code health gates: ruff (check and format), mypy --strict, import contracts, dead code
	$(BIN)/ruff check functions tests
	$(BIN)/ruff format --check functions tests
	$(BIN)/mypy --strict functions
	$(BIN)/lint-imports
	$(BIN)/vulture functions tests/vulture_whitelist.py

bench: setup deps kube crds traefik  ## benchmarks (realstack: real Traefik + Prometheus on the test cluster): JSON under tests/bench/results/, a table on stdout
	$(BIN)/python -m tests.bench

demo: setup deps  ## the main job on the embedded default (SQLite, local HAProxy/Prometheus)
	$(BIN)/graylane demo

clean:
	rm -rf $(VENV) .pytest_cache tests/bench/results

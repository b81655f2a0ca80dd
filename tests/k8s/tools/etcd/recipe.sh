# shellcheck shell=bash
# etcd v3.7.3 for the test apiserver (sourced by tests/k8s/tools/build.sh); cmd/etcd is upstream's main.
PACKAGES=(./cmd/etcd)

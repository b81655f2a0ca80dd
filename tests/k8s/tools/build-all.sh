#!/usr/bin/env bash
# Build (or reuse) every Go tools module of tests/k8s/tools, two at a time: one build alone leaves a core idle
# while it downloads modules or links, so on a cold 2-core machine two overlapping builds finish sooner than
# the same builds one after the other. Largest first, so the long ones start at once. Each build is
# tools/build.sh (cached per recipe; a second caller of the same tool waits on its lock and reuses it).
# Prints one "NAME BIN-DIR (Ns)" line per tool; exits non-zero if any build failed (its log is on stderr).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
jobs=${GRAYLANE_BUILD_JOBS:-2}
export here
printf '%s\n' kube traefik-v2 traefik-v3 istioctl kwok flagd etcd |
  xargs -P "$jobs" -I{} bash -c 'start=$(date +%s); bin=$(bash "$here/build.sh" {}) && echo "{} $bin ($(( $(date +%s) - start ))s)"'

#!/usr/bin/env bash
# Runs hm's benchmark programs and prints their markdown rows. Each program measures its own
# baseline in the same run; paste the rows into BENCHMARKS.md.
#   bash bench/run.sh [scheduler|docker|sandbox]...
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(scheduler)
for t in "${targets[@]}"; do
  go run "./bench/$t"
done

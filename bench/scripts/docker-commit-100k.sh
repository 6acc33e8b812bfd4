#!/usr/bin/env bash
# Baseline for the sandbox's commit benchmark: `docker commit` of a container that wrote
# 100,000 small files (the same change bench/sandbox commits), median of N runs.
#   bash bench/scripts/docker-commit-100k.sh [N] [IMAGE]
set -euo pipefail
n="${1:-3}"
image="${2:-hm-test-busybox:latest}"
times=()
for _ in $(seq "$n"); do
  c=$(docker create "$image" sh -c 'mkdir -p /data && cd /data && i=0; while [ $i -lt 100 ]; do mkdir d$i; j=0; while [ $j -lt 1000 ]; do echo $j > d$i/f$j; j=$((j+1)); done; i=$((i+1)); done')
  docker start -a "$c" >/dev/null
  t0=$(date +%s%N)
  img=$(docker commit "$c")
  t1=$(date +%s%N)
  docker rm -f "$c" >/dev/null
  docker rmi -f "$img" >/dev/null
  times+=($(( (t1 - t0) / 1000000 )))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p")
echo "| docker commit of a container that wrote 100,000 files, median of $n | ${median} ms | runs: ${times[*]} ms |"

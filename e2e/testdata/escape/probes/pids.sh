# A default pids limit: a finite pids.max on the step's cgroup (or an ancestor, as the step
# sees it), and forking beyond it fails. The fork loop runs only under a limit of at most
# 4096, so an unlimited step is reported without a fork bomb.
PROBE=pids
. /workspace/probes/lib.sh
need awk cat sleep kill
limit=
path=$(bb awk -F: '$2 == "pids" || $2 == "" { print $3; exit }' /proc/self/cgroup)
for base in /sys/fs/cgroup/pids /sys/fs/cgroup; do
  p=$path
  while :; do
    f=$base$p/pids.max
    [ "$p" = / ] && f=$base/pids.max
    if [ -r "$f" ]; then
      v=$(bb cat "$f")
      note "$f: $v"
      if [ "$v" != max ] && { [ -z "$limit" ] || [ "$v" -lt "$limit" ]; }; then limit=$v; fi
    fi
    [ "$p" = / ] || [ -z "$p" ] && break
    p=${p%/*}
    [ -z "$p" ] && p=/
  done
done
if [ -z "$limit" ]; then
  escaped "no finite pids.max over the step (cgroup $path)"
elif [ "$limit" -gt 4096 ]; then
  escaped "pids.max $limit: too high to bound a fork bomb"
else
  # A failed fork ends the subshell (ash raises "can't fork"); the count is what it reached.
  # Until the sleeps are killed nothing more can fork, so what follows uses builtins only.
  (
    i=0
    while [ $i -lt 5000 ]; do
      bb sleep 100 &
      echo $! >>/tmp/hm-escape-pids
      i=$((i + 1))
      echo $i >/tmp/hm-escape-count
    done
  ) 2>/dev/null
  while read -r p; do kill "$p" 2>/dev/null; done </tmp/hm-escape-pids
  i=0
  read -r i </tmp/hm-escape-count
  if [ "$i" -ge 5000 ]; then escaped "forked 5000 processes under pids.max $limit"; else denied "fork failed after $i processes (pids.max $limit)"; fi
fi
finish

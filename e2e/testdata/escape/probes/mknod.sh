# mknod'ed devices are useless: the kernel log (c 1 11) and the host's disk (HOST_DISK,
# read only, 512 bytes) cannot be read through a node made anywhere writable.
PROBE=mknod
. /workspace/probes/lib.sh
need mknod head wc timeout rm
for d in / /tmp /dev /dev/shm /opt; do
  [ -d "$d" ] || continue
  for dev in "kmsg c 1 11" "disk b $HOST_DISK"; do
    set -- $dev
    node=$d/hm-escape-$1
    bb rm -f "$node" 2>/dev/null
    if ! err=$(bb mknod "$node" "$2" "$3" "$4" 2>&1); then
      denied "mknod $node $2 $3 $4: $err"
      continue
    fi
    n=$(bb timeout 2 busybox head -c 512 "$node" 2>/dev/null | bb wc -c)
    if [ "$n" -gt 0 ]; then
      escaped "read $n bytes through $node ($2 $3 $4)"
    else
      denied "mknod $node made, but it cannot be read: $(bb head -c1 "$node" 2>&1 >/dev/null)"
    fi
    bb rm -f "$node"
  done
done
finish

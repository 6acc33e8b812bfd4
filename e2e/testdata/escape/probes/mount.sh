# No new mounts: tmpfs, proc, sysfs, bind (each unmounted again if it succeeded).
PROBE=mount
. /workspace/probes/lib.sh
need mount umount mkdir
for m in "tmpfs tmpfs" "proc proc" "sysfs sysfs"; do
  set -- $m
  dir=/tmp/hm-escape-$1
  bb mkdir -p "$dir"
  attempt "mount -t $1 $2 $dir" bb mount -t "$1" "$2" "$dir" && bb umount "$dir"
done
bb mkdir -p /tmp/hm-escape-bind
attempt "mount -o bind / /tmp/hm-escape-bind" bb mount -o bind / /tmp/hm-escape-bind && bb umount /tmp/hm-escape-bind
finish

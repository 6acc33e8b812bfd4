# cgroupfs: no mounting the host's hierarchies, and what is mounted is read-only.
PROBE=cgroup
. /workspace/probes/lib.sh
need mount umount mkdir rmdir awk
for m in "cgroup -o memory cgroup" "cgroup2 none"; do
  set -- $m
  fs=$1
  shift
  dir=/tmp/hm-escape-$fs
  bb mkdir -p "$dir"
  if attempt "mount -t $fs $* $dir" bb mount -t "$fs" "$@" "$dir"; then
    attempt "mkdir a cgroup in the mounted $fs" bb mkdir "$dir/hm-escape-probe" && bb rmdir "$dir/hm-escape-probe"
    bb umount "$dir"
  fi
done
# Only the cgroup filesystems count: Docker's v1 /sys/fs/cgroup is a private, writable tmpfs
# holding read-only cgroup mounts.
cgmounts=$(bb awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 "=" $4 }' /proc/self/mounts)
[ -n "$cgmounts" ] || note "no cgroup filesystem mounted"
for m in $cgmounts; do
  mp=${m%%=*}
  case ,${m#*=}, in
    *,ro,*) denied "$mp mounted ro" ;;
    *) escaped "$mp mounted ${m#*=}" ;;
  esac
  attempt "mkdir $mp/hm-escape-probe" bb mkdir "$mp/hm-escape-probe" && bb rmdir "$mp/hm-escape-probe"
done
finish

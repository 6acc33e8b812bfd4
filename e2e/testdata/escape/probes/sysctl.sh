# /proc/sys writes: refused. Each write puts back the value just read, so an escape changes
# nothing on the host (the test compares the host's values before and after anyway).
PROBE=sysctl
. /workspace/probes/lib.sh
for p in kernel/randomize_va_space vm/overcommit_memory kernel/panic net/ipv4/ip_forward kernel/hostname; do
  f=/proc/sys/$p
  if ! v=$(bb cat "$f" 2>&1); then
    broken "read $f: $v"
    continue
  fi
  if err=$({ echo "$v" >"$f"; } 2>&1); then
    escaped "wrote $f (value $v kept)"
  else
    denied "write $f: $err"
  fi
done
helper openwr /proc/sys/kernel/randomize_va_space /proc/sys/kernel/core_pattern /proc/sys/vm/drop_caches
finish

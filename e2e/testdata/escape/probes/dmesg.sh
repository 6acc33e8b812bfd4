# The kernel log: syslog(2) through dmesg, and /dev/kmsg.
PROBE=dmesg
. /workspace/probes/lib.sh
need dmesg head wc timeout
if out=$(bb dmesg 2>&1); then
  escaped "dmesg read $(echo "$out" | bb wc -l) lines of the kernel log"
else
  denied "dmesg: $out"
fi
if [ -e /dev/kmsg ]; then
  n=$(bb timeout 2 busybox head -c1 /dev/kmsg 2>/dev/null | bb wc -c)
  if [ "$n" -gt 0 ]; then escaped "/dev/kmsg is readable"; else denied "/dev/kmsg unreadable"; fi
else
  denied "/dev/kmsg absent"
fi
finish

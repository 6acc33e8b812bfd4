# Builds in layer-make: the device node its committed layer carries cannot be opened.
PROBE=layer-nodes
. /workspace/probes/lib.sh
need head wc timeout
if [ -e /opt/hm-escape/kmsg ]; then
  n=$(bb timeout 2 busybox head -c1 /opt/hm-escape/kmsg 2>/dev/null | bb wc -c)
  if [ "$n" -gt 0 ]; then escaped "the parent's /opt/hm-escape/kmsg reads the kernel log"; else denied "the parent's kmsg node cannot be read"; fi
else
  denied "the parent's kmsg node did not survive the commit"
fi
finish

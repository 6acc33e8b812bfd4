# The parent of layer-nodes: leaves a kernel-log node and a setuid-root copy of busybox in its
# committed layer (whatever of it the machine allows); it succeeds either way.
PROBE=layer-make
. /workspace/probes/lib.sh
bb mkdir -p /opt/hm-escape
bb mknod /opt/hm-escape/kmsg c 1 11 && note "made /opt/hm-escape/kmsg" || note "mknod refused"
src=/bin/busybox
[ -x "$src" ] || src=/usr/bin/busybox
bb cp "$src" /opt/hm-escape/suid && bb chmod 4755 /opt/hm-escape/suid && note "made setuid /opt/hm-escape/suid" || note "setuid copy refused"
finish

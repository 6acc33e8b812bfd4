# /sys read-only and its firmware masked.
PROBE=sys
. /workspace/probes/lib.sh
need awk ls
opts=$(bb awk '$2 == "/sys" { print $4 }' /proc/self/mounts)
case ,$opts, in
  ,,) denied "/sys not mounted" ;;
  *,ro,*) denied "/sys mounted ro" ;;
  *) escaped "/sys mounted $opts" ;;
esac
if [ -n "$(bb ls -A /sys/firmware 2>/dev/null)" ]; then escaped "/sys/firmware lists $(bb ls /sys/firmware)"; else denied "/sys/firmware empty or absent"; fi
helper openwr /sys/kernel/uevent_helper /sys/power/state /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/profiling /sys/class/net/lo/mtu
finish

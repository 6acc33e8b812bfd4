# /proc: kcore, keys, timer_list and the like masked; sysrq-trigger, irq, bus, sys read-only
# (opened for writing without writing: never a sysrq).
PROBE=proc
. /workspace/probes/lib.sh
need head wc ls
for f in kcore keys timer_list timer_stats latency_stats sched_debug; do
  p=/proc/$f
  [ -e "$p" ] || { denied "$p absent"; continue; }
  n=$(bb head -c 64 "$p" 2>/dev/null | bb wc -c)
  if [ "$n" -gt 0 ]; then escaped "$p readable"; else denied "$p masked"; fi
done
for d in acpi scsi asound; do
  p=/proc/$d
  if [ -n "$(bb ls -A "$p" 2>/dev/null)" ]; then escaped "$p lists $(bb ls "$p" | bb head -n 3)"; else denied "$p empty or absent"; fi
done
helper openwr /proc/sysrq-trigger /proc/irq/default_smp_affinity /proc/sys/kernel/sysrq $(bb ls -d /proc/irq/*/smp_affinity 2>/dev/null | bb head -n 1) $(bb ls -d /proc/bus/pci/*/* 2>/dev/null | bb head -n 1)
finish

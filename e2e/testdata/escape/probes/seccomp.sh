# Seccomp: the step runs under a filter (mode 2).
PROBE=seccomp
. /workspace/probes/lib.sh
need awk
mode=$(bb awk '$1 == "Seccomp:" { print $2 }' /proc/self/status)
case $mode in
  2) denied "Seccomp: 2 (filter)" ;;
  "") broken "no Seccomp line in /proc/self/status" ;;
  *) escaped "Seccomp: $mode, want 2 (filter)" ;;
esac
note "$(bb grep Seccomp_filters /proc/self/status)"
finish

# /dev holds the standard nodes only: null zero full random urandom tty ptmx console and ptys.
PROBE=devices
. /workspace/probes/lib.sh
need find stat
n=0
for node in $(bb find /dev -type c -o -type b 2>/dev/null); do
  n=$((n + 1))
  t=$(bb stat -L -c '%F %t:%T' "$node" 2>/dev/null)
  case $t in
    "character special file "1:[3579] | "character special file 1:8" | "character special file "5:[012] | "character special file 88:"*)
      denied "$node standard ($t)" ;;
    *) escaped "$node: $t is not a standard node" ;;
  esac
done
[ "$n" -gt 0 ] || broken "no device nodes at all under /dev (is find working?)"
finish

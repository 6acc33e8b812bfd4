# Nothing names hm's state: no HM_ variables of the sandbox or the state dir's path in any
# process's environment or command line, nor in the step's cgroup path or its mount table (on
# the host image too: the state dir is hidden by a whiteout, not a mount).
# The patterns come from a file, so no grep's command line carries them.
PROBE=environ
. /workspace/probes/lib.sh
need grep tr
pat=/workspace/probe.patterns
found() { bb tr '\0' '\n' <"$1" 2>/dev/null | bb grep -F -f "$pat"; }
env | bb grep -F -f "$pat" >/dev/null && escaped "the step's env: $(env | bb grep -F -f "$pat" | bb tr '\n' ' ')"
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/self/cgroup /proc/1/cgroup; do
  [ -r "$f" ] || continue
  if m=$(found "$f"); then escaped "$f: $(echo "$m" | bb tr '\n' ' ')"; fi
done
for f in /proc/self/mountinfo /proc/1/mountinfo; do
  if m=$(found "$f"); then
    escaped "$f: $(echo "$m" | bb head -n 3)"
  fi
done
[ -r /proc/1/environ ] || note "/proc/1/environ unreadable"
[ "$esc" = 0 ] && denied "no process's environment or command line, the cgroup path or the mount table names hm's state"
finish

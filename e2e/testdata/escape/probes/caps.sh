# Capabilities: every set within Docker's default 14 (0xa80425fb).
PROBE=caps
. /workspace/probes/lib.sh
need awk printf
allowed=$((0xa80425fb))
for f in CapInh CapPrm CapEff CapBnd CapAmb; do
  v=$(bb awk -v f="$f:" '$1 == f { print $2 }' /proc/self/status)
  if [ -z "$v" ]; then
    broken "no $f line in /proc/self/status"
    continue
  fi
  extra=$((0x$v & ~allowed))
  if [ "$extra" -ne 0 ]; then
    escaped "$f $v: beyond Docker's default a80425fb by $(bb printf %x "$extra")"
  else
    denied "$f $v: within a80425fb"
  fi
done
note "$(bb grep NoNewPrivs /proc/self/status)"
finish

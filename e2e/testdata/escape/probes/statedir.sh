# The state dir is invisible, and unmounting what hides it (or covers a parent) does not
# reveal it.
PROBE=statedir
. /workspace/probes/lib.sh
need ls umount awk sort
look() {
  if l=$(bb ls -A "$STATE" 2>&1) && [ -n "$l" ]; then
    escaped "$1: ls $STATE lists: $(echo "$l" | bb tr '\n' ' ')"
  else
    denied "$1: ls $STATE: ${l:-empty}"
  fi
}
look "at start"
for round in 1 2 3 4; do
  for mp in $(bb awk '{ print length($2), $2 }' /proc/self/mounts | bb sort -rn | bb awk '{ print $2 }'); do
    case $STATE/ in
      "$mp"/*) ;;
      *) continue ;;
    esac
    [ "$mp" = / ] && continue
    attempt "umount $mp" bb umount "$mp" || attempt "umount -l $mp" bb umount -l "$mp"
  done
  look "after umount round $round"
done
finish

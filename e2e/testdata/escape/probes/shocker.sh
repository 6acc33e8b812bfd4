# open_by_handle_at ("shocker") against the host-backed bind mounts' filesystem, and writes
# to the test's canary files (in its own temp dir and in the state dir) by every route.
PROBE=shocker
. /workspace/probes/lib.sh
for p in /etc/resolv.conf /etc/hosts; do
  [ -e "$p" ] && helper shocker "$p"
done
helper write $CANARIES
finish

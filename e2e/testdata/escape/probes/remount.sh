# The host-backed bind mounts (resolv.conf, hosts) cannot be made writable; no remount at all.
PROBE=remount
. /workspace/probes/lib.sh
need mount umount
for p in /etc/resolv.conf /etc/hosts /etc/hostname; do
  [ -e "$p" ] || continue
  attempt "mount -o remount,bind,rw $p" bb mount -o remount,bind,rw "$p"
done
attempt "mount -o remount,rw /" bb mount -o remount,rw /
finish

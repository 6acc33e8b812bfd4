#!/usr/bin/env bash
# Builds hm-test-busybox:latest, the small base image hm's Docker tests and benchmarks use,
# from the busybox-static binary through `docker import` (no registry needed). Idempotent:
# an existing image is kept unless --force is given.
#
#   scripts/test-image.sh [--force] [IMAGE]
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
image="${1:-hm-test-busybox:latest}"

if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "test-image: $image exists"
  exit 0
fi

bb=""
for c in /bin/busybox /usr/bin/busybox; do
  if [ -x "$c" ] && ! ldd "$c" >/dev/null 2>&1; then bb="$c"; break; fi # static: ldd fails
done
if [ -z "$bb" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq busybox-static >/dev/null 2>&1 || {
      apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null
    }
    bb=/bin/busybox
  else
    echo "test-image: needs a static busybox (Debian: apt-get install busybox-static)" >&2
    exit 1
  fi
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,opt,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
# --install -s runs inside the rootfs so the links point at /bin/busybox there.
chroot "$root" /bin/busybox --install -s 2>/dev/null || {
  # chroot unavailable (not root): make the links by hand from the applet list.
  for a in $("$bb" --list-full); do
    [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
  done
}
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"

tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    --message "hm test image: busybox-static" - "$image" >/dev/null
echo "test-image: built $image"

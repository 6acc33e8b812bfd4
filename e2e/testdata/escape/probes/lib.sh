# Sourced by every probe after it sets PROBE. Every finding is one line starting with a
# verdict word: "denied", "ESCAPED", "broken" (the probe could not run: a missing tool is a
# failure, never a pass) or "note". finish prints the probe's marker line
#   HM-PROBE <name> DENIED | ESCAPED | BROKEN
# and exits 0, 1 or 2 accordingly. Probes run under `busybox sh` and call busybox applets
# by name through bb, so they behave the same on a busybox image and on the host image.
# /workspace/probe.env (written by the test) sets STATE, HOST_NETNS, HOST_MACS, HOST_DISK and
# CANARIES as plain shell variables: nothing of it is exported into the environment.
set -u
. /workspace/probe.env
esc=0
brk=0
escaped() { echo "ESCAPED $*"; esc=1; }
denied() { echo "denied $*"; }
broken() { echo "broken $*"; brk=1; }
note() { echo "note $*"; }

bb() { busybox "$@"; }

# need APPLET...: each must be a busybox applet here.
need() {
  for a; do
    busybox --list 2>/dev/null | busybox grep -qx "$a" || broken "busybox has no $a applet"
  done
}

# helper ARGS...: run the static Go helper; its lines carry their own verdicts.
helper() {
  if [ ! -x /workspace/probe ]; then
    broken "no /workspace/probe helper"
    return
  fi
  /workspace/probe "$@"
  case $? in
    0) ;;
    1) esc=1 ;;
    *) brk=1 ;;
  esac
}

# attempt WHAT CMD...: CMD must fail; its success is an escape. Prints CMD's error.
attempt() {
  what=$1
  shift
  if out=$("$@" 2>&1); then
    escaped "$what: succeeded ${out:+($out)}"
    return 0
  fi
  denied "$what: ${out:-failed}"
  return 1
}

finish() {
  if [ "$esc" = 1 ]; then
    echo "HM-PROBE $PROBE ESCAPED"
    exit 1
  elif [ "$brk" = 1 ]; then
    echo "HM-PROBE $PROBE BROKEN"
    exit 2
  fi
  echo "HM-PROBE $PROBE DENIED"
  exit 0
}

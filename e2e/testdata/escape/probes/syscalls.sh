# Syscalls Docker's default profile (seccomp and capabilities) refuses.
PROBE=syscalls
. /workspace/probes/lib.sh
helper syscalls
finish

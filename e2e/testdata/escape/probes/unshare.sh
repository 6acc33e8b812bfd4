# No new namespaces: a user namespace would hand the step a full capability set again.
PROBE=unshare
. /workspace/probes/lib.sh
need unshare
attempt "unshare -U -r (user namespace)" bb unshare -U -r true
attempt "unshare -m (mount namespace)" bb unshare -m true
attempt "unshare -n (network namespace)" bb unshare -n true
finish

# The default network is a private namespace without CAP_NET_ADMIN: not the host's (namespace
# inode, interface MACs), and lo cannot be changed (an address added by an escape is removed).
PROBE=net
. /workspace/probes/lib.sh
need readlink ip awk
ns=$(bb readlink /proc/self/ns/net)
if [ "$ns" = "$HOST_NETNS" ]; then escaped "network namespace $ns is the host's"; else denied "network namespace $ns (host $HOST_NETNS)"; fi
for mac in $(bb ip -o link 2>/dev/null | bb awk '{ for (i = 1; i < NF; i++) if ($i == "link/ether") print $(i+1) }'); do
  case " $HOST_MACS " in
    *" $mac "*) escaped "host interface $mac visible" ;;
  esac
done
note "interfaces: $(bb ip -o link | bb awk '{ print $2 }' | bb tr '\n' ' ')"
if attempt "ip addr add 10.255.255.1/32 dev lo" bb ip addr add 10.255.255.1/32 dev lo; then
  bb ip addr del 10.255.255.1/32 dev lo
fi
mtu=$(bb ip -o link show lo | bb awk '{ for (i = 1; i < NF; i++) if ($i == "mtu") print $(i+1) }')
attempt "ip link set lo mtu $mtu (unchanged value)" bb ip link set lo mtu "$mtu"
finish

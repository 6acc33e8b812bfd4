package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/confine"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm/sandbox/sandboxinit"
)

// seccompFilter is Docker's default seccomp profile as the init loads it: a struct
// sock_filter array, native layout. Compiled once per process.
var seccompFilter = sync.OnceValues(func() ([]byte, error) {
	filter, err := confine.Seccomp()
	if err != nil {
		return nil, err
	}
	size := len(filter) * int(unsafe.Sizeof(unix.SockFilter{}))
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(filter))), size), nil
})

// confine fills in cfg's confinement for the step init ip runs (spec/semantics.md §
// Isolation): Docker's default capabilities and seccomp profile, Docker's masked and
// read-only paths, the step's cgroup2 hierarchy read-only, and, where no devices cgroup
// holds the init, nodev mounts and a read-only /dev instead.
func (b *Backend) confine(cfg *sandboxinit.Config, ip *initProc) error {
	if b.opts.Unconfined {
		return nil
	}
	filter, err := seccompFilter()
	if err != nil {
		return fmt.Errorf("sandbox: %w: %w", errs.ErrInfra, err)
	}
	cfg.Seccomp = filter
	cfg.CapMask = confine.CapMask
	cfg.Masked, cfg.Readonly = confine.MaskedPaths(), confine.ReadonlyPaths()
	cfg.NoDev = !ip.devices
	cfg.Cgroup2 = b.cg.v2
	if !b.cg.v2 {
		cfg.Cgroup1 = hierarchies(ip.cgroups)
	}
	return nil
}

// hierarchies names the cgroup v1 hierarchies of the step cgroups dirs by their mount
// options: /sys/fs/cgroup/cpu/... is in "cpu,cpuacct" where cpu links to that.
func hierarchies(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		rel, ok := strings.CutPrefix(d, cgroupRoot+"/")
		if !ok {
			continue
		}
		first, _, _ := strings.Cut(rel, "/")
		resolved, err := filepath.EvalSymlinks(filepath.Join(cgroupRoot, first))
		if err != nil {
			continue
		}
		if h := filepath.Base(resolved); !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// whiteOut makes path (absolute, on the host) vanish from a root whose lower layer is the
// host's root filesystem: an overlayfs whiteout at that path in the step's upper directory,
// with the directories above it made as on the host. Unlike a mount over it, a whiteout
// names nothing in the step's mount table and cannot be unmounted; deleting or recreating
// the path inside the step only ever touches the step's own layer. It is committed with
// the step's layer, which keeps it hidden from children too.
func whiteOut(upper, path string) error {
	dir := upper
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, part := range parts[:len(parts)-1] {
		dir = filepath.Join(dir, part)
		host := "/" + strings.Join(parts[:i+1], "/")
		fi, err := os.Stat(host)
		if err != nil {
			return err
		}
		if err := os.Mkdir(dir, fi.Mode().Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if err := os.Lchown(dir, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
		if err := os.Chmod(dir, fi.Mode()&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid)); err != nil {
			return err
		}
	}
	// A 0/0 character device is overlayfs' whiteout.
	err := unix.Mknod(filepath.Join(dir, parts[len(parts)-1]), unix.S_IFCHR, 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// slirpDNS is slirp4netns' DNS forwarder inside the step's private network.
const slirpDNS = "10.0.2.3"

// resolvDir holds the resolver configuration of private networks whose host resolver is on
// loopback: outside the state dir, whose path a bind mount's source would show the step.
const resolvDir = "/run/hm-sandbox"

// privateResolvConf returns the host file for a private network's /etc/resolv.conf: the
// host's own (""), unless every nameserver it names is a loopback address
// (systemd-resolved's 127.0.0.53, a local dnsmasq), which the step's network namespace
// cannot reach; then a copy naming slirp4netns' DNS forwarder instead, which asks the host's
// resolver. Computed once per process.
var privateResolvConf = sync.OnceValue(func() string {
	host, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	conf, ok := rewriteLoopbackResolv(string(host))
	if !ok {
		return ""
	}
	if err := os.MkdirAll(resolvDir, 0o755); err != nil {
		return ""
	}
	p := filepath.Join(resolvDir, "resolv.conf")
	tmp := p + "." + randomHex()
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return ""
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return ""
	}
	return p
})

// rewriteLoopbackResolv replaces the nameservers of a resolv.conf whose nameservers are all
// loopback addresses by slirp4netns' forwarder; false when it has a reachable one (or none).
func rewriteLoopbackResolv(conf string) (string, bool) {
	var out []string
	servers, loopback := 0, 0
	for _, line := range strings.Split(conf, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			servers++
			if ip := net.ParseIP(f[1]); ip != nil && ip.IsLoopback() {
				loopback++
			}
			continue
		}
		out = append(out, line)
	}
	if servers == 0 || loopback < servers {
		return "", false
	}
	return "nameserver " + slirpDNS + "\n" + strings.TrimLeft(strings.Join(out, "\n"), "\n"), true
}

package confine

import (
	"encoding/binary"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const (
	allow  = unix.SECCOMP_RET_ALLOW
	eperm  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	enosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

// seccompData lays out struct seccomp_data as the kernel hands it to the filter on a
// little-endian machine, as 32-bit words: the kernel's loads are native-endian, the
// interpreter's big-endian (network order), so each word is stored big-endian at the
// offset the kernel would have it.
func seccompData(arch uint32, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))       // low word first
		binary.BigEndian.PutUint32(b[16+8*i+4:], uint32(a>>32)) // then the high word
	}
	return b
}

func TestCapMaskIsDockers(t *testing.T) {
	if CapMask != 0xa80425fb {
		t.Errorf("CapMask = %#x, want Docker's default 0xa80425fb", CapMask)
	}
}

// The compiled profile, run in a BPF interpreter on the data the kernel would pass: what
// Docker's default profile refuses is refused, what it allows is allowed, and switching
// ABIs does not get around it.
func TestSeccompDecisions(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the syscall numbers below are x86-64's")
	}
	filter, err := Seccomp()
	if err != nil {
		t.Fatal(err)
	}
	insts := make([]bpf.Instruction, len(filter))
	for i, f := range filter {
		insts[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}.Disassemble()
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatal(err)
	}
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	i386 := uint32(unix.AUDIT_ARCH_I386)
	for _, tc := range []struct {
		name string
		data []byte
		want uint32
	}{
		{"getpid", seccompData(x86, unix.SYS_GETPID), allow},
		{"read", seccompData(x86, unix.SYS_READ), allow},
		{"execve", seccompData(x86, unix.SYS_EXECVE), allow},
		{"plain clone (fork)", seccompData(x86, unix.SYS_CLONE, uint64(unix.SIGCHLD)), allow},
		{"thread clone", seccompData(x86, unix.SYS_CLONE, unix.CLONE_VM|unix.CLONE_FS|unix.CLONE_FILES|unix.CLONE_SIGHAND|unix.CLONE_THREAD), allow},
		{"clone into a user namespace", seccompData(x86, unix.SYS_CLONE, unix.CLONE_NEWUSER|uint64(unix.SIGCHLD)), eperm},
		{"clone into a mount namespace", seccompData(x86, unix.SYS_CLONE, unix.CLONE_NEWNS), eperm},
		{"clone3 (libc falls back to clone)", seccompData(x86, unix.SYS_CLONE3), enosys},
		{"socket AF_INET", seccompData(x86, unix.SYS_SOCKET, unix.AF_INET), allow},
		{"socket AF_UNIX", seccompData(x86, unix.SYS_SOCKET, unix.AF_UNIX), allow},
		{"mount", seccompData(x86, unix.SYS_MOUNT), eperm},
		{"umount2", seccompData(x86, unix.SYS_UMOUNT2), eperm},
		{"unshare", seccompData(x86, unix.SYS_UNSHARE), eperm},
		{"setns", seccompData(x86, unix.SYS_SETNS), eperm},
		{"open_by_handle_at (shocker)", seccompData(x86, unix.SYS_OPEN_BY_HANDLE_AT), eperm},
		{"syslog (kernel log)", seccompData(x86, unix.SYS_SYSLOG), eperm},
		{"keyctl", seccompData(x86, unix.SYS_KEYCTL), eperm},
		{"add_key", seccompData(x86, unix.SYS_ADD_KEY), eperm},
		{"bpf", seccompData(x86, unix.SYS_BPF), eperm},
		{"init_module", seccompData(x86, unix.SYS_INIT_MODULE), eperm},
		{"kexec_load", seccompData(x86, unix.SYS_KEXEC_LOAD), eperm},
		{"reboot", seccompData(x86, unix.SYS_REBOOT), eperm},
		{"perf_event_open", seccompData(x86, unix.SYS_PERF_EVENT_OPEN), eperm},
		{"pivot_root", seccompData(x86, unix.SYS_PIVOT_ROOT), eperm},
		{"personality(PER_LINUX)", seccompData(x86, unix.SYS_PERSONALITY, 0), allow},
		{"personality(other)", seccompData(x86, unix.SYS_PERSONALITY, 0x0400000), eperm},
		{"unknown syscall number", seccompData(x86, 1000), eperm},
		{"x32 ABI", seccompData(x86, unix.SYS_GETPID|0x40000000), enosys},
		{"i386 getpid", seccompData(i386, 20), eperm},
		{"i386 mount", seccompData(i386, 21), eperm},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vm.Run(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if uint32(got) != tc.want {
				t.Errorf("filter returned %#x, want %#x", uint32(got), tc.want)
			}
		})
	}
}

func TestDockerLists(t *testing.T) {
	masked, ro := MaskedPaths(), ReadonlyPaths()
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"} {
		if !slices.Contains(masked, p) {
			t.Errorf("MaskedPaths() = %v, lacks %s", masked, p)
		}
	}
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"} {
		if !slices.Contains(ro, p) {
			t.Errorf("ReadonlyPaths() = %v, lacks %s", ro, p)
		}
	}
	rules := DeviceRules()
	if rules[0] != "a" {
		t.Errorf("DeviceRules()[0] = %q, want the deny-all first", rules[0])
	}
	for _, r := range []string{"c 1:3 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 136:* rwm", "c *:* m"} {
		if !slices.Contains(rules, r) {
			t.Errorf("DeviceRules() = %v, lacks %q", rules, r)
		}
	}
	for _, r := range rules {
		if strings.HasPrefix(r, "b") && r != "b *:* m" {
			t.Errorf("DeviceRules() allows block device access: %q", r)
		}
	}
}

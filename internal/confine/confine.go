// Package confine is the confinement floor of hm's isolating backends (spec/semantics.md §
// Isolation): Docker's default capability set and Docker's default seccomp profile, compiled
// to a classic BPF program the kernel can load. It only computes; the sandbox init applies
// the result to the step (package sandboxinit), a future microVM init would do the same.
//
// The profile is moby's own (github.com/moby/profiles/seccomp), resolved for this
// architecture, this kernel and the capability set below, so that hm denies exactly what
// `docker run` denies; the BPF is assembled by github.com/elastic/go-seccomp-bpf. Nothing
// here is a hand-written syscall list.
//
// What the compiled filter does, in order: a syscall of another architecture than the
// native one (a 32-bit `int 0x80` from a 64-bit process, say) is refused with EPERM,
// whatever the profile would allow for it, so the filter cannot be bypassed by switching
// ABIs; x32 syscalls get ENOSYS; then the profile's rules in its order (clone3 is ENOSYS so
// that libc falls back to clone, whose namespace flags are refused); everything else EPERM.
package confine

import (
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"

	seccompbpf "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Caps are the capabilities a step keeps: Docker's default set, by its names.
var Caps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

var capNumbers = map[string]uint{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE,
	"CAP_FSETID": unix.CAP_FSETID, "CAP_FOWNER": unix.CAP_FOWNER, "CAP_MKNOD": unix.CAP_MKNOD,
	"CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_SETGID": unix.CAP_SETGID, "CAP_SETUID": unix.CAP_SETUID,
	"CAP_SETFCAP": unix.CAP_SETFCAP, "CAP_SETPCAP": unix.CAP_SETPCAP,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT,
	"CAP_KILL": unix.CAP_KILL, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
}

// CapMask is Caps as a bit mask (bit N is capability N): 0xa80425fb.
var CapMask = func() uint64 {
	var m uint64
	for _, c := range Caps {
		m |= 1 << capNumbers[c]
	}
	return m
}()

// Seccomp returns Docker's default seccomp profile for this machine as a BPF program, ready
// for seccomp(SECCOMP_SET_MODE_FILTER). It is computed once per process.
var Seccomp = sync.OnceValues(func() ([]unix.SockFilter, error) {
	insts, err := assemble()
	if err != nil {
		return nil, fmt.Errorf("confine: seccomp profile: %w", err)
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("confine: seccomp profile: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
})

// auditArch is the seccomp_data.arch value of native syscalls.
var auditArch = map[string]uint32{
	"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64,
	"riscv64": unix.AUDIT_ARCH_RISCV64, "ppc64le": unix.AUDIT_ARCH_PPC64LE,
	"s390x": unix.AUDIT_ARCH_S390X, "loong64": unix.AUDIT_ARCH_LOONGARCH64,
}

// assemble resolves moby's default profile for Caps and turns it into instructions.
func assemble() ([]bpf.Instruction, error) {
	native, ok := auditArch[runtime.GOARCH]
	if !ok {
		return nil, fmt.Errorf("no seccomp support for %s", runtime.GOARCH)
	}
	prof, err := mobyseccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: Caps, Effective: Caps, Permitted: Caps},
	}})
	if err != nil {
		return nil, err
	}
	policy, err := toPolicy(prof)
	if err != nil {
		return nil, err
	}
	insts, err := policy.Assemble()
	if err != nil {
		return nil, err
	}
	// The assembler sends another architecture's syscalls to the default action; the
	// prefix makes that explicit and independent of the assembler's layout.
	eperm := uint32(seccompbpf.ActionErrno) | uint32(unix.EPERM)
	prefix := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: native, SkipTrue: 1},
		bpf.RetConstant{Val: eperm},
	}
	return append(prefix, insts...), nil
}

// toPolicy translates a resolved OCI seccomp profile into the assembler's policy: one group
// per run of rules with the same action, in the profile's order, so that the first rule
// that matches decides as in libseccomp's filters for the default profile.
func toPolicy(p *specs.LinuxSeccomp) (*seccompbpf.Policy, error) {
	if p.DefaultAction != specs.ActErrno || (p.DefaultErrnoRet != nil && *p.DefaultErrnoRet != uint(unix.EPERM)) {
		return nil, fmt.Errorf("unsupported default action %s", p.DefaultAction)
	}
	info, err := nativeSyscalls()
	if err != nil {
		return nil, err
	}
	type group struct {
		action seccompbpf.Action
		plain  map[string]bool
		cond   map[string][]seccompbpf.ArgumentConditions
		order  []string
	}
	var groups []*group
	for _, sc := range p.Syscalls {
		action, err := toAction(sc)
		if err != nil {
			return nil, err
		}
		if len(groups) == 0 || groups[len(groups)-1].action != action {
			groups = append(groups, &group{action: action, plain: map[string]bool{}, cond: map[string][]seccompbpf.ArgumentConditions{}})
		}
		g := groups[len(groups)-1]
		conds, err := toConditions(sc.Args)
		if err != nil {
			return nil, fmt.Errorf("syscalls %v: %w", sc.Names, err)
		}
		for _, name := range sc.Names {
			if !info[name] {
				continue // another architecture's syscall, or one this table does not know
			}
			if !g.plain[name] && len(g.cond[name]) == 0 {
				g.order = append(g.order, name)
			}
			if len(conds) == 0 {
				g.plain[name] = true
			} else {
				g.cond[name] = append(g.cond[name], conds...)
			}
		}
	}
	policy := &seccompbpf.Policy{DefaultAction: seccompbpf.ActionErrno}
	for _, g := range groups {
		sg := seccompbpf.SyscallGroup{Action: g.action}
		for _, name := range g.order {
			if g.plain[name] {
				// Unconditional wins over conditional rules of the same action.
				sg.Names = append(sg.Names, name)
				continue
			}
			for _, c := range g.cond[name] {
				sg.NamesWithCondtions = append(sg.NamesWithCondtions, seccompbpf.NameWithConditions{Name: name, Conditions: c})
			}
		}
		if len(sg.Names)+len(sg.NamesWithCondtions) > 0 {
			policy.Syscalls = append(policy.Syscalls, sg)
		}
	}
	if len(policy.Syscalls) == 0 {
		return nil, errors.New("the profile allows nothing on this architecture")
	}
	return policy, nil
}

func toAction(sc specs.LinuxSyscall) (seccompbpf.Action, error) {
	switch sc.Action {
	case specs.ActAllow:
		return seccompbpf.ActionAllow, nil
	case specs.ActErrno:
		errno := uint(unix.EPERM)
		if sc.ErrnoRet != nil {
			errno = *sc.ErrnoRet
		}
		if errno == uint(unix.EPERM) {
			return seccompbpf.ActionErrno, nil
		}
		return seccompbpf.ActionErrno | seccompbpf.Action(errno&0xffff), nil
	}
	return 0, fmt.Errorf("unsupported action %s for %v", sc.Action, sc.Names)
}

// toConditions turns one rule's argument comparisons into alternatives (ORed) of ANDed
// conditions: comparisons of different arguments must all hold; several comparisons of
// the same argument are alternatives, as runc and libseccomp treat them.
func toConditions(args []specs.LinuxSeccompArg) ([]seccompbpf.ArgumentConditions, error) {
	if len(args) == 0 {
		return nil, nil
	}
	byIndex := map[uint][]seccompbpf.Condition{}
	for _, a := range args {
		c := seccompbpf.Condition{Argument: uint32(a.Index), Value: a.Value}
		switch a.Op {
		case specs.OpEqualTo:
			c.Operation = seccompbpf.Equal
		case specs.OpNotEqual:
			c.Operation = seccompbpf.NotEqual
		case specs.OpLessThan:
			c.Operation = seccompbpf.LessThan
		case specs.OpLessEqual:
			c.Operation = seccompbpf.LessOrEqual
		case specs.OpGreaterThan:
			c.Operation = seccompbpf.GreaterThan
		case specs.OpGreaterEqual:
			c.Operation = seccompbpf.GreaterOrEqual
		case specs.OpMaskedEqual:
			if a.ValueTwo != 0 {
				return nil, fmt.Errorf("masked comparison with a non-zero value (%#x & %#x) is not supported", a.Value, a.ValueTwo)
			}
			c.Operation = seccompbpf.BitsNotSet // (arg & mask) == 0
		default:
			return nil, fmt.Errorf("unsupported comparison %s", a.Op)
		}
		byIndex[a.Index] = append(byIndex[a.Index], c)
	}
	alts := []seccompbpf.ArgumentConditions{nil}
	for _, idx := range slices.Sorted(maps.Keys(byIndex)) {
		var next []seccompbpf.ArgumentConditions
		for _, alt := range alts {
			for _, c := range byIndex[idx] {
				next = append(next, append(slices.Clone(alt), c))
			}
		}
		alts = next
	}
	return alts, nil
}

// nativeSyscalls is the set of syscall names the assembler knows on this architecture.
func nativeSyscalls() (map[string]bool, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, err
	}
	names := make(map[string]bool, len(info.SyscallNames))
	for n := range info.SyscallNames {
		names[n] = true
	}
	return names, nil
}

package confine

// The lists below are dockerd's defaults (github.com/docker/docker/oci DefaultLinuxSpec and
// the device rules dockerd adds at run time), written out rather than imported: that
// package pulls in containerd's whole module for what is a dozen paths. Keep them in step
// with Docker's when it adds to them.

// MaskedPaths are the paths a step sees empty. Directories get an empty read-only tmpfs,
// files the null device; a path the kernel lacks is skipped.
func MaskedPaths() []string {
	return []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
}

// ReadonlyPaths are the paths a step sees read-only.
func ReadonlyPaths() []string {
	return []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
}

// DeviceRules is the device allow-list in the cgroup v1 devices controller's syntax, the
// deny-all first: mknod of any node is allowed and stays useless; only the standard
// devices (null, zero, full, random, urandom, tty, console, the pty multiplexer and
// pseudo-terminals) can be opened.
func DeviceRules() []string {
	return []string{
		"a",
		"c *:* m", "b *:* m",
		"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
		"c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
	}
}

package sandbox

import "testing"

func TestRewriteLoopbackResolv(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"systemd-resolved", "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
			"nameserver 10.0.2.3\n# stub\noptions edns0 trust-ad\nsearch lan\n", true},
		{"loopback v4 and v6", "nameserver 127.0.0.1\nnameserver ::1\n", "nameserver 10.0.2.3\n", true},
		{"a reachable server", "nameserver 10.255.255.53\n", "", false},
		{"one reachable among loopback", "nameserver 127.0.0.53\nnameserver 192.0.2.1\n", "", false},
		{"no nameserver", "search lan\n", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := rewriteLoopbackResolv(tc.in)
			if ok != tc.ok || got != tc.want {
				t.Errorf("rewriteLoopbackResolv(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

package sandbox

import "sync"

// testBackends are the sandbox backends newBackend opened and that are not closed yet. A
// step cgroup carries only the process's cookie, so processLeftovers cannot tell whose it is:
// it must not count the cgroups of another open backend's idle spare init, which that backend
// holds, legitimately, until it closes.
var testBackends struct {
	sync.Mutex
	open map[*Backend]bool
}

// track records b as open until the returned func is called (after b.Close).
func track(b *Backend) (untrack func()) {
	testBackends.Lock()
	defer testBackends.Unlock()
	if testBackends.open == nil {
		testBackends.open = map[*Backend]bool{}
	}
	testBackends.open[b] = true
	return func() {
		testBackends.Lock()
		defer testBackends.Unlock()
		delete(testBackends.open, b)
	}
}

// spares returns the PIDs and cookies of the idle spare inits of b and of every open test
// backend.
func spares(b *Backend) (pids map[int]bool, cookies map[string]bool) {
	testBackends.Lock()
	all := []*Backend{b}
	for o := range testBackends.open {
		all = append(all, o)
	}
	testBackends.Unlock()
	pids, cookies = map[int]bool{}, map[string]bool{}
	for _, o := range all {
		if pid := o.sparePID(); pid > 0 {
			pids[pid] = true
		}
		if c := o.spareCookie(); c != "" {
			cookies[c] = true
		}
	}
	return pids, cookies
}

package sandbox

import (
	"fmt"

	"github.com/hmci/hm/internal/cachedir"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/sandbox/sandboxinit"
)

// A step's cache directories (vm.Spec.CacheDirs) are directories of the state dir's
// cachedir store, bound into the step's mount namespace after its root is set up: outside
// the overlay, so nothing written there reaches the upper layer and a snapshot; only the
// empty mount point does, as with Docker's volumes. Concurrent steps share them (see
// package cachedir).

// useCacheDirs takes the step's cache directories from the state dir's store, locked
// against removal until release.
func (b *Backend) useCacheDirs(dirs []vm.CacheDir) ([]sandboxinit.Bind, func(), error) {
	var binds []sandboxinit.Bind
	var releases []func()
	release := func() {
		for _, r := range releases {
			r()
		}
	}
	store := cachedir.Open(b.state, "sandbox")
	for _, d := range dirs {
		src, r, err := store.Use(d)
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("sandbox: run: %w", err)
		}
		releases = append(releases, r)
		binds = append(binds, sandboxinit.Bind{Src: src, Dst: d.Path})
	}
	return binds, release, nil
}

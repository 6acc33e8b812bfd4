package docker

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
)

// CopyArtifacts implements vm.ArtifactCopier through the archive API: a container is
// created (never started) from the snapshot, labelled like a step's so that reconcile
// removes it should hm die meanwhile, and only the paths that may hold a match
// (artifact.Prefixes) are fetched with CopyFromContainer.
//
// The daemon resolves symlinks in a path's directories (inside the container's root), so
// before a path is fetched every component from /workspace down is stat'ed on its own,
// each a real directory: a symlink among them is fetched as the link itself, which the
// Collector refuses, and nothing behind it is read.
func (b *Backend) CopyArtifacts(ctx context.Context, snapshot string, owner vm.Owner, patterns []string, dst *os.Root) (artifact.Result, error) {
	fail := func(err error) (artifact.Result, error) {
		return artifact.Result{}, fmt.Errorf("docker: artifacts of snapshot %s: %w", snapshot, err)
	}
	m, err := b.create(ctx, vm.Spec{Parent: snapshot, Cmd: "true", Env: vm.BaseEnv, Owner: owner}, inert)
	if err != nil {
		return fail(err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = m.Destroy(dctx)
	}()
	id := m.(*machine).id
	c := artifact.New(dst, patterns)
	for _, p := range artifact.Prefixes(patterns) {
		fetch, err := b.reachable(ctx, id, p)
		if err != nil {
			return fail(err)
		}
		if fetch == "" {
			continue
		}
		rc, _, err := b.cli.CopyFromContainer(ctx, id, path.Join(vm.Workdir, fetch))
		if err != nil {
			return fail(apiErr(ctx, "copy from container", err))
		}
		err = c.FromTar(ctx, rc, fetch)
		rc.Close()
		if err != nil {
			return fail(err)
		}
	}
	return c.Result(), nil
}

// reachable returns what to fetch for prefix p (relative to /workspace): p itself when every
// directory above it is a real directory, the first symlink on the way (fetched as the link,
// for the Collector to refuse), or "" when nothing is there.
func (b *Backend) reachable(ctx context.Context, id, p string) (string, error) {
	st, err := b.cli.ContainerStatPath(ctx, id, vm.Workdir)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", nil
		}
		return "", apiErr(ctx, "stat in container", err)
	}
	if !st.Mode.IsDir() || st.Mode&fs.ModeSymlink != 0 {
		return "", fmt.Errorf("%w: %s in the snapshot is not a directory", errs.ErrInfra, vm.Workdir)
	}
	if p == "." {
		return ".", nil
	}
	comps := strings.Split(p, "/")
	for i := range comps[:len(comps)-1] {
		sub := strings.Join(comps[:i+1], "/")
		st, err := b.cli.ContainerStatPath(ctx, id, path.Join(vm.Workdir, sub))
		switch {
		case cerrdefs.IsNotFound(err):
			return "", nil
		case err != nil:
			return "", apiErr(ctx, "stat in container", err)
		case st.Mode&fs.ModeSymlink != 0:
			return sub, nil
		case !st.Mode.IsDir():
			return "", nil
		}
	}
	if _, err := b.cli.ContainerStatPath(ctx, id, path.Join(vm.Workdir, p)); err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", nil
		}
		return "", apiErr(ctx, "stat in container", err)
	}
	return p, nil
}

var _ vm.ArtifactCopier = (*Backend)(nil)

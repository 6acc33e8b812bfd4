package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
)

// CopyArtifacts implements vm.ArtifactCopier: a snapshot is the step's work directory (its
// /workspace), read through an os.Root so that nothing outside it is ever opened.
func (b *Backend) CopyArtifacts(ctx context.Context, snapshot string, _ vm.Owner, patterns []string, dst *os.Root) (artifact.Result, error) {
	dir, ok := b.snapPath(snapshot)
	if !ok {
		return artifact.Result{}, fmt.Errorf("host: artifacts: %w: %q is not a host snapshot id", errs.ErrInfra, snapshot)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return artifact.Result{}, fmt.Errorf("host: artifacts: %w: snapshot %s is gone", errs.ErrInfra, snapshot)
		}
		return artifact.Result{}, fmt.Errorf("host: artifacts: %w: %w", errs.ErrInfra, err)
	}
	defer root.Close()
	c := artifact.New(dst, patterns)
	if err := c.FromFS(ctx, root.FS()); err != nil {
		return artifact.Result{}, fmt.Errorf("host: artifacts: %w", err)
	}
	return c.Result(), nil
}

var _ vm.ArtifactCopier = (*Backend)(nil)

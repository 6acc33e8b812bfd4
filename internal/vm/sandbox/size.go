package sandbox

import (
	"context"
	"fmt"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/statedir"
)

// SnapshotSize implements vm.Backend: the bytes of the snapshot's own (top) layer; the layers
// below it belong to its ancestors.
func (b *Backend) SnapshotSize(ctx context.Context, id string) (int64, error) {
	r, err := b.readSnap(id)
	if err != nil {
		return 0, err
	}
	if len(r.Layers) == 0 {
		return 0, nil
	}
	n, err := statedir.Size(b.layerDir(r.Layers[0]))
	if err != nil {
		return 0, fmt.Errorf("sandbox: snapshot size %s: %w: %w", id, errs.ErrInfra, err)
	}
	return n, nil
}

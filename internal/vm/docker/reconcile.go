package docker

import (
	"context"
	"errors"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"

	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm"
)

// listing is the kept snapshots as Reconcile's one image listing found them. A start-up asks
// for them twice more right after (ListSnapshots for the registry, PruneSnapshots), and an
// image listing is the daemon's slowest read: it walks every image it holds, tens of ms on
// a daemon with a few hundred. The listing stands in for a fresh one while this backend has
// neither committed nor removed a snapshot since (gen) and for at most listingTTL. What other
// hm processes changed meanwhile is safe to miss: a snapshot committed since belongs to a
// live owner (never pruned; an unlisted id is asked with SnapshotExists), one removed since
// is removed again idempotently or found gone at its lookup.
type listing struct {
	at   time.Time
	gen  uint64
	kept []image.Summary
}

// listingTTL bounds how long Reconcile's listing stands in for a fresh one.
const listingTTL = 5 * time.Second

// wrote records that this backend committed or removed a snapshot: the listing is stale.
func (b *Backend) wrote() {
	b.mu.Lock()
	b.gen++
	b.mu.Unlock()
}

// ListSnapshots returns the ids of the live kept (non-ephemeral) snapshots that hm processes
// on this host made with the same state directory.
func (b *Backend) ListSnapshots(ctx context.Context) ([]string, error) {
	imgs, err := b.keptSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(imgs))
	for i, img := range imgs {
		ids[i] = img.ID
	}
	return ids, nil
}

// PruneSnapshots implements vm.Backend: it removes the kept snapshots of this host and state
// directory that keep rejects and whose committing hm process is gone.
func (b *Backend) PruneSnapshots(ctx context.Context, keep func(id string) bool) ([]string, error) {
	imgs, err := b.keptSnapshots(ctx)
	if errors.Is(err, vm.ErrNotListed) {
		return nil, nil // no owner died: no snapshot can be waiting for a registration that never came
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, img := range imgs {
		if keep(img.ID) || !b.deadOwner(img.Labels) {
			continue
		}
		if err := b.RemoveSnapshot(ctx, img.ID); err != nil {
			return removed, err
		}
		removed = append(removed, img.ID)
	}
	return removed, nil
}

// keptSnapshots is the live kept snapshots: Reconcile's listing while it is fresh, else
// vm.ErrNotListed while Reconcile's finding that nothing needs cleaning is (see listingTTL),
// else a listing of its own.
func (b *Backend) keptSnapshots(ctx context.Context) ([]image.Summary, error) {
	b.mu.Lock()
	l := b.listing
	fresh := l != nil && l.gen == b.gen && time.Since(l.at) < listingTTL
	light := !b.light.IsZero() && time.Since(b.light) < listingTTL
	b.mu.Unlock()
	if fresh {
		return l.kept, nil
	}
	if light {
		return nil, vm.ErrNotListed
	}
	imgs, err := b.cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelEphemeral+"=false"),
		filters.Arg("reference", SnapshotRepo),
	)})
	if err != nil {
		return nil, apiErr(ctx, "list snapshots", err)
	}
	return b.kept(imgs), nil
}

// kept filters a listing down to the live kept snapshots of this host and state directory.
func (b *Backend) kept(imgs []image.Summary) []image.Summary {
	var out []image.Summary
	for _, img := range imgs {
		if snapshotTag(img.RepoTags) != "" && img.Labels[LabelEphemeral] == "false" &&
			b.ours(img.Labels) && img.Labels[LabelState] == b.state {
			out = append(out, img)
		}
	}
	return out
}

// ours reports whether labels name this host and this state dir (or carry no such label).
func (b *Backend) ours(labels map[string]string) bool {
	if h, ok := labels[LabelHost]; ok && h != b.host {
		return false
	}
	// Another state dir's hm (another user, another test suite on the same daemon) judges
	// and cleans its own leftovers.
	if st, ok := labels[LabelState]; ok && st != b.state {
		return false
	}
	return true
}

// deadOwner reports whether labels name an owner on this host that is gone.
func (b *Backend) deadOwner(labels map[string]string) bool {
	if !b.ours(labels) {
		return false
	}
	o, err := proc.ParseOwner(labels[LabelOwner])
	return err == nil && !o.Alive()
}

// Reconcile implements vm.Backend: it removes the containers and the ephemeral snapshots of
// hm processes on this host that are gone, and images whose snapshot tag was removed while a
// container still used them. Its one image listing also serves the kept-snapshot listings
// that follow it (see listing). It asks the daemon nothing when the owner records say that
// there is nothing to clean (owners.go); ListSnapshots then returns vm.ErrNotListed for a
// while, and PruneSnapshots finds nothing to prune.
func (b *Backend) Reconcile(ctx context.Context) error {
	full, dead := b.needFull()
	if !full {
		b.mu.Lock()
		b.light = time.Now()
		b.mu.Unlock()
		return nil
	}
	if err := b.reconcileFull(ctx); err != nil {
		return err
	}
	b.fullDone(dead)
	return nil
}

func (b *Backend) reconcileFull(ctx context.Context) error {
	var errList []error
	cs, err := b.cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelOwner))})
	if err != nil {
		return apiErr(ctx, "reconcile: list containers", err)
	}
	for _, c := range cs {
		if b.deadOwner(c.Labels) {
			if err := b.removeContainer(ctx, c.ID); err != nil {
				errList = append(errList, err)
			}
		}
	}
	b.mu.Lock()
	gen := b.gen // plus the removals below: any other write since makes the listing stale
	b.mu.Unlock()
	at := time.Now()
	imgs, err := b.cli.ImageList(ctx, image.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelOwner))})
	if err != nil {
		return apiErr(ctx, "reconcile: list images", err)
	}
	for _, img := range imgs {
		switch {
		case snapshotTag(img.RepoTags) == "" && b.ours(img.Labels) &&
			(b.deadOwner(img.Labels) || time.Since(time.Unix(img.Created, 0)) > untaggedGrace):
			// Removed as a snapshot already; delete it unless a container or a child image
			// still needs it (the daemon refuses then, and prunes it with its last child).
			// A live owner's fresh image may be a commit between its creation and its
			// tagging, hence the grace period.
			_, err := b.cli.ImageRemove(ctx, img.ID, image.RemoveOptions{PruneChildren: true})
			if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
				errList = append(errList, apiErr(ctx, "reconcile: remove image "+img.ID, err))
			}
		case img.Labels[LabelEphemeral] == "true" && b.deadOwner(img.Labels):
			gen++
			if err := b.RemoveSnapshot(ctx, img.ID); err != nil {
				errList = append(errList, err)
			}
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("docker: reconcile: %w", ctx.Err())
	}
	if err := errors.Join(errList...); err != nil {
		return fmt.Errorf("docker: reconcile: %w", err)
	}
	// Only ephemeral and untagged images were removed above: the kept ones are as listed.
	b.mu.Lock()
	b.listing = &listing{at: at, gen: gen, kept: b.kept(imgs)}
	b.light = time.Time{}
	b.mu.Unlock()
	return nil
}

// untaggedGrace is how old an untagged hm image of a live owner must be before Reconcile
// deletes it; far longer than the daemon takes from creating a committed image to tagging it.
const untaggedGrace = 10 * time.Minute

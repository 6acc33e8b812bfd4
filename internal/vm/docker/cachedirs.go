package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"

	"github.com/hmci/hm/internal/cachedir"
	"github.com/hmci/hm/internal/vm"
)

// A step's cache directories (vm.Spec.CacheDirs) are named volumes, one per state dir and
// cache directory id, labeled LabelCacheDir (the id), LabelState and the pipeline and path,
// so `docker volume ls --filter label=dev.hm.cachedir` shows them and hm removes them.
// Volumes rather than binds of the state dir: the daemon may be elsewhere (DOCKER_HOST),
// and the root-owned files a step writes stay the daemon's to delete. They are mounted with
// nocopy, so that, as on the other backends, the image's files at that path are hidden, not
// copied in. docker commit never includes a volume: only the empty mount point reaches a
// snapshot. The state dir's cachedir store records each (last used, pipeline) and holds its
// lock while a container may write to it.
const (
	LabelCacheDir = "dev.hm.cachedir"
	LabelPipeline = "dev.hm.pipeline"
	LabelPath     = "dev.hm.path"
)

// volumeName is the volume of cache directory id in this backend's state dir.
func (b *Backend) volumeName(id string) string {
	h := sha256.Sum256([]byte(b.state))
	return "hm-cache-" + hex.EncodeToString(h[:4]) + "-" + id
}

// cacheMounts makes the spec's volumes (idempotent) and locks them in the state dir's
// store until release.
func (b *Backend) cacheMounts(ctx context.Context, dirs []vm.CacheDir) (mounts []mount.Mount, release func(), err error) {
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	store := cachedir.Open(b.state, "docker")
	for _, d := range dirs {
		id := d.ID()
		if b.state != "" {
			_, r, err := store.Use(d)
			if err != nil {
				release()
				return nil, nil, fmt.Errorf("docker: create: %w", err)
			}
			releases = append(releases, r)
		}
		name := b.volumeName(id)
		labels := map[string]string{LabelCacheDir: id, LabelState: b.state, LabelPipeline: d.Pipeline, LabelPath: d.Path, LabelHost: b.host}
		if _, err := b.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: labels}); err != nil {
			release()
			return nil, nil, apiErr(ctx, "create volume "+name, err)
		}
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: name, Target: d.Path,
			VolumeOptions: &mount.VolumeOptions{NoCopy: true}})
	}
	return mounts, release, nil
}

var _ vm.CacheDirVolumes = (*Backend)(nil)

// CacheDirSizes implements vm.CacheDirVolumes: the daemon's disk usage of this state dir's
// cache volumes, by cache directory id.
func (b *Backend) CacheDirSizes(ctx context.Context) (map[string]int64, error) {
	du, err := b.cli.DiskUsage(ctx, types.DiskUsageOptions{Types: []types.DiskUsageObject{types.VolumeObject}})
	if err != nil {
		return nil, apiErr(ctx, "disk usage", err)
	}
	out := map[string]int64{}
	for _, v := range du.Volumes {
		id := v.Labels[LabelCacheDir]
		if id == "" || v.Labels[LabelState] != b.state || v.Name != b.volumeName(id) || v.UsageData == nil {
			continue
		}
		out[id] = v.UsageData.Size
	}
	return out, nil
}

// RemoveCacheDir implements vm.CacheDirVolumes. A volume a container still uses is not
// removed (the daemon refuses); a missing one is not an error.
func (b *Backend) RemoveCacheDir(ctx context.Context, id string) error {
	err := b.cli.VolumeRemove(ctx, b.volumeName(id), false)
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	return apiErr(ctx, "remove volume "+b.volumeName(id), err)
}

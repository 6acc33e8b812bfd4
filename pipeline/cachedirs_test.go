package pipeline_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/pipeline"
)

func TestCacheDirs(t *testing.T) {
	test := pipeline.Sh("test", "go test ./...").CacheDirs("/root/.cache/go-build").CacheDirs("/root/go/pkg/mod")
	p := render(t, pipeline.New("ci", test, pipeline.Sh("plain", "true")))
	if diff := cmp.Diff([]string{"/root/.cache/go-build", "/root/go/pkg/mod"}, p.Nodes[0].Step.CacheDirs); diff != "" {
		t.Errorf("cache_dirs (-want +got):\n%s", diff)
	}
	if p.Nodes[1].Step.CacheDirs != nil {
		t.Errorf("a step without CacheDirs has %v", p.Nodes[1].Step.CacheDirs)
	}
	_, err := pipeline.New("ci", pipeline.Sh("a", "true").CacheDirs("/workspace/x")).IR(pipeline.WithDir(t.TempDir()))
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != "ir_cache_dirs" {
		t.Errorf("a cache dir under /workspace: %v, want ir_cache_dirs", err)
	}
}

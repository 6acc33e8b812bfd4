package ir

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

func TestCacheDirs(t *testing.T) {
	graph := func(dirs string) []byte {
		return []byte(`{"version":"0","graph":{"nodes":[{"step":{"key":"a","cmd":"true","cache_dirs":` + dirs + `}}],"edges":[]}}`)
	}
	p, err := Parse(graph(`["/root/.cache/go-build","/root/go/pkg/mod","/workspaces"]`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/root/.cache/go-build", "/root/go/pkg/mod", "/workspaces"}, p.Nodes[0].Step.CacheDirs); diff != "" {
		t.Errorf("cache_dirs (-want +got):\n%s", diff)
	}
	if p, err := Parse(graph(`[]`)); err != nil || p.Nodes[0].Step.CacheDirs != nil {
		t.Errorf("empty list: %v %v", p, err)
	}
	many := make([]string, MaxCacheDirs+1)
	for i := range many {
		many[i] = fmt.Sprintf(`"/c/%d"`, i)
	}
	for _, bad := range []string{
		`["relative/dir"]`, `["/"]`, `["/root/../etc"]`, `["/root/"]`, `["/root//x"]`, `[""]`,
		`["/workspace"]`, `["/workspace/node_modules"]`, `["/proc/x"]`, `["/dev"]`, `["/sys/fs"]`,
		`["/a","/a"]`, `["/a","/a/b"]`, `["/a/b","/a"]`, `["/a\u0000b"]`,
		`["/` + strings.Repeat("x", 5000) + `"]`, `[` + strings.Join(many, ",") + `]`,
	} {
		_, err := Parse(graph(bad))
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != "ir_cache_dirs" || !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%.60s: err = %v, want ir_cache_dirs", bad, err)
		}
	}
	if _, err := Parse(graph(`"/root/.cache"`)); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("a string instead of a list: err = %v, want invalid IR", err)
	}
}

package ir

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

func TestArtifacts(t *testing.T) {
	parse := func(artifacts string) (*Pipeline, error) {
		return Parse([]byte(`{"version":"0","graph":{"nodes":[{"step":{"key":"a","cmd":"true","artifacts":` + artifacts + `}}],"edges":[]}}`))
	}
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`null`, nil},
		{`[]`, []string{}},
		{`["dist/*.tar.gz", "./report.xml", "/workspace/out/", "a//b", "dist/*.tar.gz"]`, []string{"dist/*.tar.gz", "report.xml", "out", "a/b"}},
	} {
		p, err := parse(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, p.Nodes[0].Step.Artifacts); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.in, d)
		}
	}
	many, _ := json.Marshal(make([]string, 65))
	for _, bad := range []string{
		`"dist"`, `[1]`, `[""]`, `["../x"]`, `["a/../../x"]`, `["a/.."]`, `["."]`, `["/workspace"]`,
		`["/etc/passwd"]`, `["/workspace/../etc"]`, `["a\u0000b"]`, `["[a"]`,
		fmt.Sprintf(`[%q]`, strings.Repeat("a", 1025)), strings.ReplaceAll(string(many), `""`, `"x"`),
	} {
		_, err := parse(bad)
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != "ir_artifacts" || !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%.40s: err = %v, want ir_artifacts", bad, err)
		}
	}
}

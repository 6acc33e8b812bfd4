package ir

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

func TestSecrets(t *testing.T) {
	graph := func(step string) []byte {
		return []byte(`{"version":"0","graph":{"nodes":[{"step":{"key":"a","cmd":"true"` + step + `}}],"edges":[]}}`)
	}
	for _, tt := range []struct {
		step string
		want []string
	}{
		{``, nil},
		{`,"secrets":null`, nil},
		{`,"secrets":[]`, nil},
		{`,"secrets":["NPM_TOKEN","_x1","NPM_TOKEN"]`, []string{"NPM_TOKEN", "_x1"}},
	} {
		p, err := Parse(graph(tt.step))
		if err != nil {
			t.Fatalf("%s: %v", tt.step, err)
		}
		if diff := cmp.Diff(tt.want, p.Nodes[0].Step.Secrets); diff != "" {
			t.Errorf("%s: secrets (-want +got):\n%s", tt.step, diff)
		}
	}
	for _, bad := range []string{
		`,"secrets":"NPM_TOKEN"`,
		`,"secrets":[1]`,
		`,"secrets":[""]`,
		`,"secrets":["1A"]`,
		`,"secrets":["A-B"]`,
		`,"secrets":["A=B"]`,
		`,"secrets":["A\u0000"]`,
		`,"secrets":["` + strings.Repeat("A", 257) + `"]`,
		`,"secrets":[` + strings.Repeat(`"A",`, MaxSecrets) + `"B"]`,
	} {
		_, err := Parse(graph(bad))
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != "ir_secrets" || !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%.60s: err = %v, want ir_secrets", bad, err)
		}
	}
}

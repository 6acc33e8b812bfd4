package ir

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/testutil"
)

// FuzzParse checks that no input makes the parser panic, and that every rejection is a
// classified, user-facing error.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(testutil.SharedDir(f), "testdata", "ir", "*.json"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"version":"0","graph":{"nodes":[{"step":{"key":"a","cmd":"x"}}],"edges":[[0,0,"builds_in"]]}}`))
	f.Add([]byte(`{"version":"0","steps":[{"type":"wait"},{"type":"command","key":"a","cmd":"x","builds_in":"a"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			var e *errs.Error
			if !errors.As(err, &e) || !errors.Is(err, errs.ErrInvalid) {
				t.Fatalf("unclassified error %T: %v", err, err)
			}
			return
		}
		for _, e := range p.Edges {
			if e.From < 0 || e.From >= len(p.Nodes) || e.To < 0 || e.To >= len(p.Nodes) || e.From == e.To {
				t.Fatalf("accepted bad edge %+v", e)
			}
		}
	})
}

package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hmci/hm/internal/store/sqlite"
	"github.com/hmci/hm/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Fixture {
		dir := t.TempDir()
		s, err := sqlite.Open(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		p := filepath.Join(dir, sqlite.FileName)
		return storetest.Fixture{Store: s, Files: []string{p, p + "-wal"}}
	})
}

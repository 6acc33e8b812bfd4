package yamlfe

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/hmci/hm/internal/testutil"
)

func loadVectors(t *testing.T) ([]vector, string) {
	t.Helper()
	dir := filepath.Join(testutil.SharedDir(t), "testdata", "cachekeys")
	data, err := os.ReadFile(filepath.Join(dir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Cases []vector }
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Cases, filepath.Join(dir, "tree")
}

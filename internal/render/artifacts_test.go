package render

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// step_artifact lines: one per file, on a hit and after a run, the path escaped.
func TestPlainArtifacts(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), &out, feed(readEvents(t, "artifacts")), Options{}); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, filepath.Join("testdata", "plain", "artifacts.golden"), out.Bytes())
}

package pipeline_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/pipeline"
)

func TestArtifacts(t *testing.T) {
	s := pipeline.Sh("build", "make").Artifacts("dist/*.tar.gz").Artifacts("/workspace/report.xml")
	got := render(t, pipeline.New("ci", s, s.Sh("child", "true")))
	if d := cmp.Diff([]string{"dist/*.tar.gz", "report.xml"}, got.Nodes[0].Step.Artifacts); d != "" {
		t.Errorf("artifacts (-want +got):\n%s", d)
	}
	if a := got.Nodes[1].Step.Artifacts; a != nil {
		t.Errorf("a child inherited artifacts %q", a)
	}
	for _, bad := range []string{"../x", "/etc/passwd", "", "."} {
		_, err := pipeline.New("ci", pipeline.Sh("a", "true").Artifacts(bad)).IR(pipeline.WithDir(t.TempDir()))
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != "step_artifacts" || e.Fix == "" {
			t.Errorf("Artifacts(%q): err = %v, want step_artifacts", bad, err)
		}
	}
}

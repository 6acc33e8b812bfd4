package yamlfe

import (
	"errors"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/errs"
)

// The artifacts field's errors, where they are written; the valid forms are in
// testdata/artifacts.yaml (golden and schema tests).
func TestArtifactsErrors(t *testing.T) {
	s := schema(t)
	for _, tt := range []struct {
		name, artifacts, at, msg string
	}{
		{"escapes", "[dist, ../secret]", "4:23", "escapes /workspace"},
		{"absolute elsewhere", "/etc/passwd", "4:16", "must be under /workspace"},
		{"whole workspace", "[.]", "4:17", "whole workspace"},
		{"bad glob", `["[a"]`, "4:17", "not a valid glob"},
		{"not strings", "{a: b}", "4:16", "artifacts"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := "steps:\n  - key: a\n    run: x\n    artifacts: " + tt.artifacts + "\n"
			_, err := Parse(".hm/ci.yaml", []byte(doc))
			var e *errs.Error
			if !errors.As(err, &e) || e.Code != "yaml_invalid" || e.Fix == "" ||
				!strings.HasPrefix(e.Msg, ".hm/ci.yaml:"+tt.at+": ") || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("err = %v, want yaml_invalid at %s mentioning %q", err, tt.at, tt.msg)
			}
			if tt.name == "bad glob" {
				return // glob syntax is beyond a JSON Schema pattern
			}
			if err := validate(s, []byte(doc)); err == nil {
				t.Errorf("the schema accepts %s", doc)
			}
		})
	}
}

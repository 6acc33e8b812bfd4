package pipeline

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMainProtocol(t *testing.T) {
	ci := New("ci", Sh("a", "true"))
	rel := New("release", Sh("b", "true"))
	ciIR, _ := ci.IR()
	relIR, _ := rel.IR()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		pipelines []Pipeline
		want      string
		wantErr   string
	}{
		{"one pipeline", nil, nil, []Pipeline{ci}, string(ciIR), ""},
		{"named", []string{"release"}, nil, []Pipeline{ci, rel}, string(relIR), ""},
		{"ambiguous", nil, nil, []Pipeline{ci, rel}, "", "name the one to print"},
		{"unknown", []string{"nope"}, nil, []Pipeline{ci, rel}, "", `no pipeline "nope" (have: ci, release)`},
		{"none", nil, nil, nil, "", "no pipelines"},
		{"duplicate", nil, nil, []Pipeline{ci, ci}, "", `two pipelines have the slug "ci"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(&out, tt.args, env(tt.env), tt.pipelines)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}

	var out bytes.Buffer
	if err := run(&out, nil, env(map[string]string{EnvelopeEnv: "1"}), []Pipeline{ci, rel}); err != nil {
		t.Fatal(err)
	}
	var got Envelope
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.SchemaVersion != "1" || len(got.Pipelines) != 2 || got.Pipelines[1].Slug != "release" {
		t.Fatalf("envelope = %+v", got)
	}
	var def, want any
	_ = json.Unmarshal(got.Pipelines[1].Definition, &def)
	_ = json.Unmarshal(relIR, &want)
	if diff := cmp.Diff(want, def); diff != "" {
		t.Errorf("envelope definition (-want +got):\n%s", diff)
	}
}

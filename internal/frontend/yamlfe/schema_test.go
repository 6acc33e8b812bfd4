package yamlfe

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/hmci/hm/internal/testutil"
)

// schema compiles schema/pipeline.schema.json, the JSON Schema editors use for .hm/*.yaml.
func schema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	s, err := jsonschema.NewCompiler().Compile(filepath.Join(testutil.RepoRoot(), "schema", "pipeline.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// validate checks every document of a YAML file against the schema.
func validate(s *jsonschema.Schema, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		js, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
		if err != nil {
			return err
		}
		if err := s.Validate(inst); err != nil {
			return err
		}
	}
}

// Every pipeline the front end accepts in testdata, the templates and the examples is valid
// under the schema.
func TestSchemaAcceptsValidPipelines(t *testing.T) {
	s := schema(t)
	var files []string
	for _, g := range []string{
		filepath.Join("testdata", "*.yaml"),
		filepath.Join("testdata", "vectors", "*.yaml"),
		filepath.Join("..", "templates", "*.yaml"),
		filepath.Join(testutil.RepoRoot(), "examples", "*", ".hm", "*.yaml"),
	} {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("only %d files found", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(f, data); err != nil {
			t.Errorf("front end rejects %s: %v", f, err)
		}
		if err := validate(s, data); err != nil {
			t.Errorf("schema rejects %s: %v", f, err)
		}
	}
}

func TestSchemaRejectsInvalidPipelines(t *testing.T) {
	s := schema(t)
	for name, doc := range map[string]string{
		"unknown top field":   "stepz: []\n",
		"no steps":            "slug: ci\n",
		"bad slug":            "slug: my ci\nsteps: [{key: a, run: x}]\n",
		"missing run":         "steps: [{key: a}]\n",
		"unknown step field":  "steps: [{key: a, run: x, rn: y}]\n",
		"bad timeout":         "steps: [{key: a, run: x, timeout: 10 minutes}]\n",
		"two cache policies":  "steps: [{key: a, run: x, cache: {forever: true, ttl: 1h}}]\n",
		"env_keys on change":  "steps: [{key: a, run: x, cache: {on_change: [a], env_keys: [B]}}]\n",
		"nested compose":      "steps: [{key: a, run: x, cache: {compose: [{compose: [none]}]}}]\n",
		"unknown policy":      "steps: [{key: a, run: x, cache: always}]\n",
		"wait extra field":    "steps: [{wait: null, key: a}]\n",
		"wait flag not bool":  "steps: [{wait: {continue_on_failure: maybe}}]\n",
		"wait inside a step":  "steps: [{key: a, run: x, steps: [wait]}]\n",
		"env value is a list": "env: {A: [1]}\nsteps: [{key: a, run: x}]\n",
		"relative cache dir":  "steps: [{key: a, run: x, cache_dirs: [.cache]}]\n",
		"cache dir workspace": "steps: [{key: a, run: x, cache_dirs: [/workspace/node_modules]}]\n",
		"cache dir not clean": "steps: [{key: a, run: x, cache_dirs: [/root/../etc]}]\n",
		"cache dir root":      "steps: [{key: a, run: x, cache_dirs: /}]\n",
		"cache dir twice":     "steps: [{key: a, run: x, cache_dirs: [/c, /c]}]\n",
	} {
		if err := validate(s, []byte(doc)); err == nil {
			t.Errorf("%s: schema accepts %q", name, doc)
		}
		if _, err := Parse("x.yaml", []byte(doc)); err == nil {
			t.Errorf("%s: front end accepts %q", name, doc)
		}
	}
}

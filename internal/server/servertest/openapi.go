package servertest

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// OpenAPI is an OpenAPI 3.0 file compiled as JSON Schema (its `nullable` rewritten to a null
// type), for validating the responses of the operations it lists.
type OpenAPI struct {
	C   *jsonschema.Compiler
	Doc map[string]any
	Ops map[string][2]string // operationId → method, path
}

// LoadOpenAPI reads and compiles the OpenAPI file at path; the document is added to the
// compiler as file:///openapi.json, so a response schema is file:///openapi.json#/paths/....
func LoadOpenAPI(path string) (*OpenAPI, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	nullable(doc)
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("file:///openapi.json", doc); err != nil {
		return nil, err
	}
	s := &OpenAPI{C: c, Doc: doc, Ops: map[string][2]string{}}
	for path, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			s.Ops[op.(map[string]any)["operationId"].(string)] = [2]string{method, path}
		}
	}
	return s, nil
}

// nullable rewrites OpenAPI 3.0's `nullable: true` to JSON Schema's null type, in place.
func nullable(v any) {
	switch x := v.(type) {
	case map[string]any:
		if x["nullable"] == true {
			if ty, ok := x["type"].(string); ok {
				x["type"] = []any{ty, "null"}
			}
			delete(x, "nullable")
		}
		for _, c := range x {
			nullable(c)
		}
	case []any:
		for _, c := range x {
			nullable(c)
		}
	}
}

package cli

import (
	"encoding/json"
	"io"

	"github.com/spf13/cobra"
)

// Listing commands (hm cache ls, hm image ls, hm pipelines) print a table for people, or with
// --format json one JSON array of objects with stable snake_case field names: one document,
// `[]` when empty, for `jq '.[]'`. (hm run --format json streams NDJSON events instead: a
// build is a stream, a listing is not.)

// listFormat adds --format to a listing command and returns a check of its value.
func listFormat(cmd *cobra.Command) func() (json bool, err error) {
	var format string
	cmd.Flags().StringVar(&format, "format", "table", "table, or json (one JSON array on stdout)")
	return func() (bool, error) {
		switch format {
		case "table", "human":
			return false, nil
		case "json":
			return true, nil
		}
		return false, usage("--format table|json", "unknown output format %q", format)
	}
}

// writeJSONList writes v (a slice) as one indented JSON array; a nil slice as [].
func writeJSONList[T any](w io.Writer, v []T) error {
	if v == nil {
		v = []T{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

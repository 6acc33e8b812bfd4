package events

import (
	"encoding/json"
	"io"
)

// NDJSONWriter writes one event per line. It does not buffer, so each event reaches the pipe
// as it happens (the spec's "flushed per event").
type NDJSONWriter struct {
	w io.Writer
}

func NewNDJSONWriter(w io.Writer) *NDJSONWriter { return &NDJSONWriter{w: w} }

// Write encodes e as one line.
func (n *NDJSONWriter) Write(e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = n.w.Write(b)
	return err
}

package events

import "io"

// NDJSONWriter writes one event per line. It does not buffer, so each event reaches the pipe
// as it happens (the spec's "flushed per event").
type NDJSONWriter struct {
	w   io.Writer
	buf []byte
}

func NewNDJSONWriter(w io.Writer) *NDJSONWriter { return &NDJSONWriter{w: w} }

// Write encodes e as one line.
func (n *NDJSONWriter) Write(e Event) error {
	b, err := Encode(e)
	if err != nil {
		return err
	}
	n.buf = append(append(n.buf[:0], b...), '\n')
	_, err = n.w.Write(n.buf)
	if cap(n.buf) > 64<<10 {
		n.buf = nil // do not pin the buffer of one long line
	}
	return err
}

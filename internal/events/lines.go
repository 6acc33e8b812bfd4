package events

import (
	"bytes"
	"sync"
)

// MaxLine is the longest log line emitted whole. A longer line is emitted in pieces of MaxLine
// bytes (the spec asks for at least 1 MiB).
const MaxLine = 4 << 20

// LineWriter turns a byte stream (a step's stdout or stderr) into lines, whatever the read
// chunk boundaries: a line split across two Writes is emitted once, whole. The trailing "\n"
// (and a "\r" before it) is not part of the line. Flush emits a final line that lacks its
// newline. Write and Flush are safe for concurrent use.
type LineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(line string)
}

// NewLineWriter calls emit once per complete line, in order.
func NewLineWriter(emit func(line string)) *LineWriter {
	return &LineWriter{emit: emit}
}

func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			for len(w.buf) >= MaxLine {
				w.emit(string(w.buf[:MaxLine]))
				w.buf = append(w.buf[:0], w.buf[MaxLine:]...)
			}
			break
		}
		var line []byte
		if len(w.buf) > 0 {
			w.buf = append(w.buf, p[:i]...)
			line = w.buf
		} else {
			line = p[:i]
		}
		for len(line) > MaxLine {
			w.emit(string(line[:MaxLine]))
			line = line[MaxLine:]
		}
		w.emit(string(bytes.TrimSuffix(line, []byte{'\r'})))
		w.buf = w.buf[:0]
		p = p[i+1:]
	}
	if cap(w.buf) > MaxLine*2 && len(w.buf) == 0 {
		w.buf = nil // do not pin a huge buffer after one long line
	}
	return n, nil
}

// Flush emits the buffered partial line, if any.
func (w *LineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(bytes.TrimSuffix(w.buf, []byte{'\r'})))
		w.buf = w.buf[:0]
	}
}

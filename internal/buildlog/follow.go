package buildlog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// PollInterval is how often Replay with follow looks for new events at the end of the file.
// Polling, as tail -f does without inotify, keeps following a build identical on every
// filesystem; a tenth of a second is below what a person watching notices.
const PollInterval = 100 * time.Millisecond

// ErrInterrupted ends a follow whose build's hm died before build_end.
var ErrInterrupted = errors.New("the build's hm ended before the build did")

// Replay calls fn with each complete event line of build id (without its newline), in order.
// Without follow it stops at the end of the file. With follow it stops after build_end; if
// the writer is gone without one, it returns ErrInterrupted once the file is drained. A
// partial last line (a writer mid-write, or a crash) is not passed to fn.
func (s *Store) Replay(ctx context.Context, id string, follow bool, fn func(line []byte) error) error {
	if !validID(id) {
		return ErrNotFound
	}
	f, err := os.Open(s.EventsPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 64<<10)
	var partial []byte
	var tick *time.Ticker
	for {
		chunk, err := rd.ReadSlice('\n')
		if err == nil || errors.Is(err, bufio.ErrBufferFull) {
			partial = append(partial, chunk...)
			if err != nil {
				continue
			}
			line := bytes.TrimSuffix(partial, []byte{'\n'})
			if ferr := fn(line); ferr != nil {
				return ferr
			}
			end := isBuildEnd(line)
			partial = partial[:0]
			if end && follow {
				return nil
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		partial = append(partial, chunk...)
		if !follow {
			return nil
		}
		// At the end of what is written: the writer holds the lock while it may write more.
		// Checked before one more read, so the lines written just before it let go are read.
		if !locked(f) {
			more, rerr := io.ReadAll(rd)
			if rerr != nil {
				return rerr
			}
			partial = append(partial, more...)
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				line := partial[:i]
				if ferr := fn(line); ferr != nil {
					return ferr
				}
				if isBuildEnd(line) {
					return nil
				}
				partial = partial[i+1:]
			}
			return ErrInterrupted
		}
		if tick == nil {
			tick = time.NewTicker(PollInterval)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// isBuildEnd reports whether an event line is build_end; the encoder writes "kind" first.
func isBuildEnd(line []byte) bool {
	return bytes.HasPrefix(line, []byte(`{"kind":"build_end"`))
}

package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hmci/hm/internal/store"
)

// Page sizes of the stores' list calls a stream makes.
const (
	logPage   = 2000
	eventPage = 1000
	// orphanGrace is how long an event stream of a terminal build waits for a build_end
	// that never comes (a build canceled before any scheduler saw it) before it ends.
	orphanGrace = 5 * time.Second
)

// sse writes Server-Sent Events frames. Frames are buffered and written with one flush per
// batch (send): a page of 1000 step_log events is one write and one flush, not 1000.
type sse struct {
	w    io.Writer
	rc   *http.ResponseController
	buf  bytes.Buffer
	last time.Time
}

func startSSE(w http.ResponseWriter) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	e := &sse{w: w, rc: http.NewResponseController(w)}
	e.flush()
	return e
}

// maxPending is how many bytes of frames are buffered before they are sent anyway.
const maxPending = 256 << 10

// frame buffers one event; data must hold no newline (JSON encodes none). It sends the
// buffer once it holds maxPending bytes; send sends the rest.
func (e *sse) frame(id, event string, data []byte) error {
	b := &e.buf
	if id != "" {
		b.WriteString("id: ")
		b.WriteString(id)
		b.WriteByte('\n')
	}
	if event != "" {
		b.WriteString("event: ")
		b.WriteString(event)
		b.WriteByte('\n')
	}
	b.WriteString("data: ")
	b.Write(data)
	b.WriteString("\n\n")
	if b.Len() >= maxPending {
		return e.send()
	}
	return nil
}

// send writes and flushes the buffered frames.
func (e *sse) send() error {
	if e.buf.Len() == 0 {
		return nil
	}
	_, err := e.w.Write(e.buf.Bytes())
	e.buf.Reset()
	if err != nil {
		return err
	}
	return e.flush()
}

// idle sends the contract's ":" keep-alive once the stream was quiet for keepAlive.
func (e *sse) idle() error {
	if time.Since(e.last) < keepAlive {
		return nil
	}
	if _, err := io.WriteString(e.w, ":\n\n"); err != nil {
		return err
	}
	return e.flush()
}

func (e *sse) flush() error {
	e.last = time.Now()
	return e.rc.Flush()
}

// resumeFrom is the Last-Event-ID header, else the last_event_id query parameter, else 0.
func resumeFrom(r *http.Request) int64 {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("last_event_id")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

type chunkView struct {
	Seq        int64  `json:"seq"`
	StreamKind int    `json:"stream_kind"`
	Content    string `json:"content"`
	TS         *int64 `json:"ts"`
}

func newChunkView(c store.LogChunk) chunkView {
	v := chunkView{Seq: c.Seq, StreamKind: c.Stream, Content: c.Content}
	if v.StreamKind < store.StreamStdout || v.StreamKind > store.StreamSystem {
		v.StreamKind = store.StreamStdout
	}
	// One line per chunk, newline-terminated: the client concatenates and splits on \n.
	if len(v.Content) == 0 || v.Content[len(v.Content)-1] != '\n' {
		v.Content += "\n"
	}
	if !c.TS.IsZero() {
		ns := c.TS.UnixNano()
		v.TS = &ns
	}
	return v
}

// jobLogs is the Harmont job log stream (log-sse.contract.json): one history frame with the
// chunks so far, chunk frames as they come, and once the job is terminal (and every chunk
// before that is sent) `event: done` with `data: {}`. It streams the job's current attempt.
func (s *Server) jobLogs(w http.ResponseWriter, r *http.Request) {
	buildID, ok := s.verifyLogToken(r.URL.Query().Get("token"))
	if !ok {
		s.writeError(w, r, &apiError{Status: http.StatusUnauthorized, Type: "authentication", Code: "log_stream_unauthorized",
			Message: "the log token is missing, invalid or expired; ask getBuildLogToken for a new one", Flat: true})
		return
	}
	forbidden := &apiError{Status: http.StatusForbidden, Type: "permission", Code: "log_stream_forbidden",
		Message: "the log token is not for this job's build", Flat: true}
	ctx := r.Context()
	job, err := s.cfg.Store.GetJob(ctx, r.PathValue("job_id"))
	if store.IsNotFound(err) || err == nil && job.BuildID != buildID {
		err = forbidden
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	after := resumeFrom(r)
	// Watching before the first read: a change between a read and the wait is not missed.
	wake, unwatch := store.Watch(s.cfg.Store, store.JobChanged(job.ID), store.JobLogs(job.ID))
	defer unwatch()
	// Read the state before the chunks: a job terminal then has every chunk stored.
	terminal := job.State.Terminal()
	history, err := s.logsAfter(r, job, after)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !terminal {
		history = store.Contiguous(history, after) // see logsAfter
	}
	out := startSSE(w)
	hv := struct {
		Chunks []chunkView `json:"chunks"`
	}{Chunks: make([]chunkView, 0, len(history))}
	for _, c := range history {
		hv.Chunks = append(hv.Chunks, newChunkView(c))
		after = c.Seq
	}
	data, _ := json.Marshal(hv)
	if out.frame("", "history", data) != nil || out.send() != nil {
		return
	}
	attempt := job.Attempt
	for {
		if terminal {
			if out.frame("", "done", []byte("{}")) == nil {
				out.send()
			}
			return
		}
		if !s.wait(ctx, wake) {
			return
		}
		if job, err = s.cfg.Store.GetJob(ctx, job.ID); err != nil {
			return
		}
		terminal = job.State.Terminal()
		if job.Attempt != attempt {
			// A retry (the lease of the previous attempt lapsed): its output follows.
			attempt, after = job.Attempt, 0
		}
		cs, err := s.logsAfter(r, job, after)
		if err != nil {
			return
		}
		if !terminal {
			cs = store.Contiguous(cs, after)
		}
		for _, c := range cs {
			data, _ := json.Marshal(newChunkView(c))
			if out.frame(strconv.FormatInt(c.Seq, 10), "chunk", data) != nil {
				return
			}
			after = c.Seq
		}
		if out.send() != nil || len(cs) == 0 && out.idle() != nil {
			return
		}
	}
}

// logsAfter reads every chunk of the job's current attempt after seq. A running job's chunks
// can have a gap (an agent's later call stored before an earlier one): a stream sends only
// up to it (store.Contiguous) until the job is terminal.
func (s *Server) logsAfter(r *http.Request, j store.Job, after int64) ([]store.LogChunk, error) {
	if j.Attempt == 0 {
		return nil, nil
	}
	var all []store.LogChunk
	for {
		cs, err := s.cfg.Store.ListLogs(r.Context(), j.ID, j.Attempt, after, logPage)
		if err != nil {
			return nil, err
		}
		all = append(all, cs...)
		if len(cs) < logPage {
			return all, nil
		}
		after = cs[len(cs)-1].Seq
	}
}

// buildEvents is hm's build event stream (remote.md): each stored event as one frame, data
// the NDJSON line, id its seq; resumed after Last-Event-ID; ended after build_end.
func (s *Server) buildEvents(w http.ResponseWriter, r *http.Request) {
	_, b, err := s.build(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	after := resumeFrom(r)
	wake, unwatch := store.Watch(s.cfg.Store, store.BuildEvents(b.ID), store.BuildChanged(b.ID))
	defer unwatch()
	out := startSSE(w)
	var terminalSince time.Time
	for {
		evs, err := s.cfg.Store.ListEvents(ctx, b.ID, after, eventPage)
		if err != nil {
			return
		}
		for _, e := range evs {
			if out.frame(strconv.FormatInt(e.Seq, 10), "", e.Payload) != nil {
				return
			}
			after = e.Seq
			if isBuildEnd(e.Payload) {
				out.send()
				return
			}
		}
		if out.send() != nil {
			return
		}
		if len(evs) == eventPage {
			continue
		}
		if b, err = s.cfg.Store.GetBuild(ctx, b.ID); err != nil {
			return
		}
		if b.State.Terminal() {
			if terminalSince.IsZero() {
				terminalSince = time.Now()
			} else if time.Since(terminalSince) > orphanGrace {
				return
			}
		}
		if out.idle() != nil || !s.wait(ctx, wake) {
			return
		}
	}
}

func isBuildEnd(payload []byte) bool {
	// Decoding every step_log of a big log only to read its kind costs more than the rest of
	// the stream: a payload without the string cannot be a build_end.
	if !bytes.Contains(payload, []byte(`"build_end"`)) {
		return false
	}
	var k struct {
		Kind string `json:"kind"`
	}
	return json.Unmarshal(payload, &k) == nil && k.Kind == "build_end"
}

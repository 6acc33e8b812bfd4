package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
	"github.com/hmci/hm/internal/store/wake"
)

// Wake-ups (store.Watcher) on PostgreSQL: every committed change wakes the waiters of this
// process at once through an in-process wake.Hub, as on SQLite, and the low-rate topics (a
// job released, a job's or a build's transition: one per transition, store.Topic.HighRate
// false) are bridged to the other replicas with NOTIFY on one channel per schema and a LISTEN
// connection that notifies the receiving replica's Hub. Log chunks and events (the high-rate
// topics, a batch per agent call) never go through NOTIFY: their watchers on another replica
// poll, and most of them also watch the job's or build's low-rate topic.
//
// Sending is asynchronous and coalesced: a write only adds its topics to a pending set and
// the sender goroutine flushes the set with one pg_notify per payload of up to maxPayload
// bytes, so a write never waits for a notification, and a burst of transitions while a flush
// is in flight becomes one more flush. A notification names its sender, whose own LISTEN
// connection drops it (its Hub was notified at commit). Delivery stays best effort: a
// notification lost with a dropped LISTEN connection costs the waiters their fallback poll,
// and after a reconnect every waiter of this process is woken once to re-read the store.

// maxPayload bounds one NOTIFY's payload: PostgreSQL refuses more than 8000 bytes.
const maxPayload = 7000

// relisten is the pause before a lost LISTEN connection is opened again.
const relisten = time.Second

type bridge struct {
	hub     wake.Hub
	sender  string // this DB's id in payloads
	channel string // quoted identifier of the schema's channel
	name    string // the channel's name (pg_notify's argument)

	mu      sync.Mutex
	pending map[store.Topic]struct{}
	kick    chan struct{}
	stop    context.CancelFunc
	wg      sync.WaitGroup
	logger  *slog.Logger

	// listening is closed once the first LISTEN is in place (tests).
	listening chan struct{}
	lonce     sync.Once
}

// Watch implements store.Watcher.
func (s *DB) Watch(topics ...store.Topic) (<-chan struct{}, func()) { return s.br.hub.Watch(topics...) }

var _ store.Watcher = (*DB)(nil)

// notify wakes this process's waiters of topics now and queues the low-rate ones for the
// other replicas. Call it after the change committed.
func (s *DB) notify(topics ...store.Topic) {
	s.br.hub.Notify(topics...)
	if s.br.kick == nil {
		return // Connect without Open: nobody else to tell
	}
	s.br.mu.Lock()
	queued := false
	for _, t := range topics {
		if t.HighRate() {
			continue
		}
		if s.br.pending == nil {
			s.br.pending = map[store.Topic]struct{}{}
		}
		s.br.pending[t] = struct{}{}
		queued = true
	}
	s.br.mu.Unlock()
	if queued {
		select {
		case s.br.kick <- struct{}{}:
		default:
		}
	}
}

// notifyJobs wakes the waiters of each job's transitions.
func (s *DB) notifyJobs(jobs []store.Job) {
	ts := make([]store.Topic, 0, len(jobs))
	for _, j := range jobs {
		ts = append(ts, store.JobChanged(j.ID))
	}
	s.notify(ts...)
}

// notifyReleased wakes the claims of the orgs of jobs that became claimable.
func (s *DB) notifyReleased(ctx context.Context, jobs ...store.Job) {
	seen := map[string]bool{}
	for _, j := range jobs {
		if j.State != store.JobScheduled || seen[j.BuildID] {
			continue
		}
		seen[j.BuildID] = true
		var org string
		if err := row(ctx, s.pool, sqlq.BuildOrg, j.BuildID).Scan(&org); err == nil {
			s.notify(store.JobsReleased(org))
		}
	}
}

// startBridge names the schema's channel and starts the sender and the listener; closeBridge
// stops them.
func (s *DB) startBridge(ctx context.Context) error {
	var db, schema string
	if err := s.pool.QueryRow(ctx, `SELECT current_database(), current_schema()`).Scan(&db, &schema); err != nil {
		return wrap("wake-ups", err)
	}
	// One channel per database and schema: NOTIFY is database-wide, and deployments (or
	// tests) in other schemas must not wake each other. A hash keeps the name within 63 bytes.
	sum := sha256.Sum256([]byte(db + "\x00" + schema))
	b := &s.br
	b.name = "hm_wake_" + hex.EncodeToString(sum[:12])
	b.channel = pgx.Identifier{b.name}.Sanitize()
	id := make([]byte, 8)
	rand.Read(id)
	b.sender = hex.EncodeToString(id)
	b.kick = make(chan struct{}, 1)
	b.listening = make(chan struct{})
	if b.logger == nil {
		b.logger = slog.New(slog.DiscardHandler)
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.stop = cancel
	b.wg.Add(2)
	go func() { defer b.wg.Done(); s.send(bctx) }()
	go func() { defer b.wg.Done(); s.listen(bctx) }()
	return nil
}

func (s *DB) closeBridge() {
	if s.br.stop != nil {
		s.br.stop()
		s.br.wg.Wait()
		s.br.stop = nil
	}
}

// send flushes the pending topics whenever kicked, until ctx ends (a last flush first, so
// that the transitions of a replica shutting down still reach the others).
func (s *DB) send(ctx context.Context) {
	b := &s.br
	for {
		select {
		case <-b.kick:
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s.flush(fctx)
			cancel()
			return
		}
		s.flush(ctx)
	}
}

func (s *DB) flush(ctx context.Context) {
	b := &s.br
	b.mu.Lock()
	topics := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(topics) == 0 {
		return
	}
	batch := &pgx.Batch{}
	for _, p := range payloads(b.sender, topics) {
		batch.Queue(`SELECT pg_notify($1, $2)`, b.name, p)
	}
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil && ctx.Err() == nil {
		// Lost: the other replicas' waiters fall back to their poll.
		b.logger.Debug("store wake-ups not sent", "err", err.Error())
	}
}

// payloads encodes topics as lines "kind id" after a first line naming the sender, split so
// that none is longer than maxPayload. Topic kinds and ids (UUIDs) hold no newline or space.
func payloads(sender string, topics map[store.Topic]struct{}) []string {
	var out []string
	var cur strings.Builder
	for t := range topics {
		line := string(t.Kind) + " " + t.ID
		if cur.Len() > 0 && cur.Len()+1+len(line) > maxPayload {
			out = append(out, cur.String())
			cur.Reset()
		}
		if cur.Len() == 0 {
			cur.WriteString(sender)
		}
		cur.WriteByte('\n')
		cur.WriteString(line)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// parsePayload is the inverse of payloads; ok false for a payload of this sender or one
// that does not parse.
func parsePayload(self, p string) ([]store.Topic, bool) {
	sender, rest, found := strings.Cut(p, "\n")
	if !found || sender == self {
		return nil, false
	}
	var ts []store.Topic
	for _, line := range strings.Split(rest, "\n") {
		kind, id, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		ts = append(ts, store.Topic{Kind: store.TopicKind(kind), ID: id})
	}
	return ts, len(ts) > 0
}

// listen holds one connection (outside the pool: LISTEN is per session) on the channel and
// notifies the Hub of what other replicas changed, reconnecting when the connection drops.
func (s *DB) listen(ctx context.Context) {
	b := &s.br
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			select {
			case <-time.After(relisten):
			case <-ctx.Done():
				return
			}
		}
		conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
		if err != nil {
			b.logger.Debug("store wake-ups: LISTEN connection", "err", err.Error())
			continue
		}
		if _, err := conn.Exec(ctx, "LISTEN "+b.channel); err != nil {
			conn.Close(context.Background())
			continue
		}
		b.lonce.Do(func() { close(b.listening) })
		if !first {
			// Whatever was sent while this replica was not listening is lost: every waiter
			// re-reads the store once.
			b.hub.NotifyAll()
		}
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				break
			}
			if ts, ok := parsePayload(b.sender, n.Payload); ok {
				b.hub.Notify(ts...)
			}
		}
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(cctx)
		cancel()
	}
}

package store

// Topic names one kind of change a waiter can be woken for: the scheduler's driver waits on
// a job's end and logs, an agent's claim on work being released, an event stream on a
// build's events. See Watcher.
type Topic struct {
	Kind TopicKind
	ID   string // the org, job or build the change is about
}

// TopicKind is what changed.
type TopicKind string

const (
	// TopicJobsReleased: a job of org ID became claimable (released, or requeued after a
	// lost lease). Low rate.
	TopicJobsReleased TopicKind = "jobs_released"
	// TopicJob: job ID's state, attempt or lease holder changed (claim, start, finish,
	// cancel, skip, reap). Heartbeats, which only extend a lease, are not changes. Low rate.
	TopicJob TopicKind = "job"
	// TopicBuild: build ID's state or cancel flag changed. Low rate.
	TopicBuild TopicKind = "build"
	// TopicJobLogs: log chunks of job ID were stored. High rate (a batch per agent call).
	TopicJobLogs TopicKind = "job_logs"
	// TopicBuildEvents: events of build ID were appended. High rate (step_log batches).
	TopicBuildEvents TopicKind = "build_events"
	// TopicDrivers: a build's driver lease was released before the build ended (its
	// replica is draining): a driver manager should scan for unfinished builds now rather
	// than at its next scan. ID is empty. Low rate.
	TopicDrivers TopicKind = "drivers"
)

// DriversWanted is the topic of builds left without a driver.
func DriversWanted() Topic { return Topic{Kind: TopicDrivers} }

// JobsReleased is the topic of org's claimable jobs.
func JobsReleased(orgID string) Topic { return Topic{TopicJobsReleased, orgID} }

// JobChanged is the topic of a job's transitions.
func JobChanged(jobID string) Topic { return Topic{TopicJob, jobID} }

// BuildChanged is the topic of a build's transitions and cancel.
func BuildChanged(buildID string) Topic { return Topic{TopicBuild, buildID} }

// JobLogs is the topic of a job's stored log chunks.
func JobLogs(jobID string) Topic { return Topic{TopicJobLogs, jobID} }

// BuildEvents is the topic of a build's appended events.
func BuildEvents(buildID string) Topic { return Topic{TopicBuildEvents, buildID} }

// HighRate says the topic fires per batch of output (logs, events): a driver bridging
// wake-ups across replicas (PostgreSQL LISTEN/NOTIFY) should forward only the low-rate
// topics, which fire once per transition, and leave the high-rate ones to polling (or to a
// waiter that also watches the low-rate topic of the same job or build).
func (t Topic) HighRate() bool { return t.Kind == TopicJobLogs || t.Kind == TopicBuildEvents }

// Watcher is an optional ability of a Store: wake-ups after committed changes, so that
// waiters need not poll at a short interval. Delivery is best effort: a wake-up can be lost
// (another process or replica wrote, a bridge dropped a notification) or spurious (a change
// that did not matter to the waiter), so a waiter always re-reads the store when woken and
// still polls at a slower interval as the fallback: a lost wake-up costs latency, never
// correctness.
type Watcher interface {
	// Watch subscribes to topics. C receives after each change of any of them committed
	// after Watch returned; wake-ups coalesce (C has capacity 1), so one value can stand for
	// many changes. stop ends the subscription; C is never closed.
	Watch(topics ...Topic) (c <-chan struct{}, stop func())
}

// Watch is st.Watch when st is a Watcher, else a channel that never receives: the waiter's
// fallback poll is then all there is.
func Watch(st any, topics ...Topic) (<-chan struct{}, func()) {
	if w, ok := st.(Watcher); ok {
		return w.Watch(topics...)
	}
	return nil, func() {}
}

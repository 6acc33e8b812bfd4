package secret

import "github.com/hmci/hm/internal/events"

// Event returns e with every secret masked in its free text: log lines, failure and retry
// messages, display names. A payload that changes is copied, never edited in place: the
// caller may share it; its wire form (events.Event.Wire) is dropped then, or a writer would
// write the unmasked bytes.
func (m *Masker) Event(e events.Event) events.Event {
	if m == nil {
		return e
	}
	switch {
	case e.StepLog != nil:
		if s := m.String(e.StepLog.Line); s != e.StepLog.Line {
			c := *e.StepLog
			c.Line = s
			e.StepLog, e.Wire = &c, nil
		}
	case e.ChainFailed != nil:
		if s := m.String(e.ChainFailed.Message); s != e.ChainFailed.Message {
			c := *e.ChainFailed
			c.Message = s
			e.ChainFailed, e.Wire = &c, nil
		}
	case e.StepRetry != nil:
		if s := m.String(e.StepRetry.Message); s != e.StepRetry.Message {
			c := *e.StepRetry
			c.Message = s
			e.StepRetry, e.Wire = &c, nil
		}
	case e.StepQueued != nil:
		if s := m.String(e.StepQueued.DisplayName); s != e.StepQueued.DisplayName {
			c := *e.StepQueued
			c.DisplayName = s
			e.StepQueued, e.Wire = &c, nil
		}
	}
	return e
}

package scheduler

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
)

// TestSecrets: a step sees only the secrets it names, after -e; a secret in its output
// (split across writes) or in an infrastructure error is masked in every event.
func TestSecrets(t *testing.T) {
	const tok, other = "tok-1234567", "other-secret-xyz"
	pl := build(t, []step{
		{key: "uses", cmd: "printenv TOKEN", secrets: []string{"TOKEN"}},
		{key: "plain", cmd: "printenv TOKEN"},
		{key: "broken", cmd: "infraerr " + other, secrets: []string{"OTHER"}},
	})
	f := newFakeVM()
	res, rec := runPlan(t, context.Background(), pl, f, Options{
		KeepGoing: true,
		ExtraEnv:  []string{"TOKEN=from-e"},
		Secrets:   map[string]string{"TOKEN": tok, "OTHER": other, "UNUSED": "unused-value"},
	})
	if res.Status != BuildFailed {
		t.Errorf("status %s, want failed (the broken step)", res.Status)
	}
	env := map[string][]string{}
	for _, s := range f.created {
		if _, seen := env[s.Owner.StepKey]; seen {
			continue // the broken step's retry
		}
		for _, kv := range s.Env {
			if strings.HasPrefix(kv, "TOKEN=") || strings.HasPrefix(kv, "OTHER=") || strings.HasPrefix(kv, "UNUSED=") {
				env[s.Owner.StepKey] = append(env[s.Owner.StepKey], kv)
			}
		}
	}
	want := map[string][]string{
		"uses":   {"TOKEN=from-e", "TOKEN=" + tok}, // later wins
		"plain":  {"TOKEN=from-e"},
		"broken": {"TOKEN=from-e", "OTHER=" + other},
	}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("secret env per step (-want +got):\n%s", diff)
	}
	var lines, messages []string
	rec.mu.Lock()
	for _, e := range rec.evs {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{tok, other, "unused-value"} {
			if strings.Contains(string(b), s) {
				t.Errorf("event holds secret %q: %s", s, b)
			}
		}
		switch {
		case e.StepLog != nil:
			lines = append(lines, e.StepLog.Line)
		case e.ChainFailed != nil:
			messages = append(messages, e.ChainFailed.Message)
		case e.Kind == events.KindStepRetry:
			messages = append(messages, e.StepRetry.Message)
		}
	}
	rec.mu.Unlock()
	if !slices.Contains(lines, "val=***") || !slices.Contains(lines, "val=from-e") {
		t.Errorf("log lines %q: want val=*** (uses) and val=from-e (plain)", lines)
	}
	if len(messages) == 0 || !strings.Contains(messages[len(messages)-1], "***") {
		t.Errorf("failure messages %q: want the masked error", messages)
	}
}

// TestSecretNotGiven: a step naming a secret that the build lacks never runs.
func TestSecretNotGiven(t *testing.T) {
	pl := build(t, []step{{key: "x", cmd: "ok", secrets: []string{"NOPE"}}})
	f := newFakeVM()
	res, _ := runPlan(t, context.Background(), pl, f, Options{})
	if res.Status != BuildFailed || res.Err == nil || !strings.Contains(res.Err.Error(), "NOPE") {
		t.Errorf("status %s, err %v: want failed naming NOPE", res.Status, res.Err)
	}
	if len(f.created) != 0 {
		t.Errorf("%d machines created, want none", len(f.created))
	}
}

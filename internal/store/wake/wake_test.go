package wake

import (
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
)

// guard bounds a wait for a wake-up that must come (a hang guard, not a timing assertion).
const guard = 10 * time.Second

func received(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestHub(t *testing.T) {
	var h Hub
	a, b := store.JobChanged("a"), store.JobLogs("a")
	c1, stop1 := h.Watch(a, b)
	c2, stop2 := h.Watch(b)
	defer stop2()

	h.Notify(store.JobChanged("other"), store.BuildChanged("a"))
	if received(c1) || received(c2) {
		t.Fatal("woken by another topic")
	}
	// Notifications coalesce: many changes before the waiter reads are one wake-up, and
	// Notify never blocks on a waiter that does not read.
	for range 100 {
		h.Notify(a)
	}
	if !received(c1) || received(c1) {
		t.Fatal("100 notifications before a read: want exactly one wake-up")
	}
	if received(c2) {
		t.Fatal("c2 does not watch a")
	}
	h.Notify(b)
	if !received(c1) || !received(c2) {
		t.Fatal("b wakes both watchers")
	}
	stop1()
	stop1() // harmless
	h.Notify(a, b)
	if received(c1) {
		t.Fatal("a stopped watch was woken")
	}
	if !received(c2) {
		t.Fatal("the other watch of b was not woken")
	}
	stop2()
	if n := h.Watchers(); n != 0 {
		t.Fatalf("%d watchers left after every stop", n)
	}
}

// TestHubConcurrent: watchers come and go while notifiers fire; every watcher that waits for
// a notification sent after it subscribed gets one (no lost wake-up in process), and none is
// left behind.
func TestHubConcurrent(t *testing.T) {
	var h Hub
	topic := store.BuildEvents("b")
	stopNotify := make(chan struct{})
	var notifiers sync.WaitGroup
	for range 4 {
		notifiers.Add(1)
		go func() {
			defer notifiers.Done()
			for {
				select {
				case <-stopNotify:
					return
				default:
					h.Notify(topic)
				}
			}
		}()
	}
	var watchers sync.WaitGroup
	for range 50 {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			c, stop := h.Watch(topic)
			defer stop()
			select {
			case <-c:
			case <-time.After(guard):
				t.Error("a watcher was never woken while notifiers ran")
			}
		}()
	}
	watchers.Wait()
	close(stopNotify)
	notifiers.Wait()
	if n := h.Watchers(); n != 0 {
		t.Fatalf("%d watchers left", n)
	}
}

// NotifyAll wakes every subscription, whatever its topics, once.
func TestNotifyAll(t *testing.T) {
	var h Hub
	c1, stop1 := h.Watch(store.JobChanged("a"))
	defer stop1()
	c2, stop2 := h.Watch(store.BuildEvents("b"), store.DriversWanted())
	defer stop2()
	h.NotifyAll()
	if !received(c1) || !received(c2) {
		t.Fatal("NotifyAll missed a subscription")
	}
	if received(c1) || received(c2) {
		t.Fatal("NotifyAll woke a subscription twice")
	}
}

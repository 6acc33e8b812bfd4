package registry

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkPeekManyTouch is a fully cached 30-step build's registry work: one PeekMany of its
// steps' entries and one Touch of them, among 60 entries.
func BenchmarkPeekManyTouch(b *testing.B) {
	r, err := Open(b.Context(), filepath.Join(b.TempDir(), "registry.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var scopes []Scope
	for i := range 60 {
		e := entry(fmt.Sprint("k", i), 1000)
		if _, err := r.Register(b.Context(), e); err != nil {
			b.Fatal(err)
		}
		if i < 30 {
			scopes = append(scopes, e.Scope())
		}
	}
	b.Run("PeekMany", func(b *testing.B) {
		for b.Loop() {
			if es, err := r.PeekMany(b.Context(), scopes); err != nil || len(es) != 30 {
				b.Fatal(len(es), err)
			}
		}
	})
	b.Run("Touch", func(b *testing.B) {
		for b.Loop() {
			if err := r.Touch(b.Context(), scopes); err != nil {
				b.Fatal(err)
			}
		}
	})
}

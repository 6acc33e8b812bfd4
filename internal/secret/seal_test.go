package secret

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSealOpens(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{"TOKEN": "hunter2-value", "OTHER": "x"}
	sealed, err := s.Seal("build-1", values)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter2-value")) {
		t.Fatal("the sealed bytes hold the value in clear")
	}
	got, err := s.Open("build-1", sealed)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(values, got); diff != "" {
		t.Errorf("opened (-want +got):\n%s", diff)
	}
	other, _ := NewSealer(bytes.Repeat([]byte{8}, 32))
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	for name, open := range map[string]func() error{
		"another build's id": func() error { _, err := s.Open("build-2", sealed); return err },
		"another key":        func() error { _, err := other.Open("build-1", sealed); return err },
		"a changed byte":     func() error { _, err := s.Open("build-1", flipped); return err },
		"too short":          func() error { _, err := s.Open("build-1", sealed[:5]); return err },
	} {
		if err := open(); !errors.Is(err, ErrUnsealable) {
			t.Errorf("%s: err = %v, want ErrUnsealable", name, err)
		}
	}
	if _, err := NewSealer(key[:16]); err == nil {
		t.Error("a 16-byte key was accepted")
	}
}

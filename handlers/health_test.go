package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"changecast/store"
	"changecast/store/bolt"
)

// brokenStore fails the way a real store can fail underneath.
type brokenStore struct {
	Store
	pingErr error
}

func (s brokenStore) Ping(ctx context.Context) error { return s.pingErr }

func (s brokenStore) GetOrder(ctx context.Context, id string) (store.Order, error) {
	return store.Order{}, errors.New("read /var/secret/data.db: input/output error")
}

func (s brokenStore) ListMessages(ctx context.Context, room, before string, limit int) ([]store.Message, error) {
	panic("index out of range in the messages bucket")
}

// notReady is a Streamer whose feed is down.
type notReady struct{ Streamer }

func (notReady) Ready() bool { return false }

func TestHealth(t *testing.T) {
	e := newEnv(t, dev)
	r := e.do(t, req{method: "GET", path: "/healthz"})
	mustStatus(t, r, http.StatusOK)
	r = e.do(t, req{method: "GET", path: "/readyz"})
	mustStatus(t, r, http.StatusOK)
	var got readiness
	r.decode(t, &got)
	if got != (readiness{Status: "ready", Store: "ok", Feed: "ok"}) {
		t.Errorf("got %+v, want ready", got)
	}
}

func TestNotReady(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   readiness
	}{
		{"store down", func(c *Config) { c.Store = brokenStore{Store: c.Store, pingErr: errors.New("dial tcp: refused")} },
			readiness{Error: "not ready: store is down", Store: "down", Feed: "ok"}},
		{"feed down", func(c *Config) { c.Streams = notReady{c.Streams} },
			readiness{Error: "not ready: change feed is down", Store: "ok", Feed: "down"}},
		{"both down", func(c *Config) {
			c.Store = brokenStore{Store: c.Store, pingErr: errors.New("dial tcp: refused")}
			c.Streams = notReady{c.Streams}
		}, readiness{Error: "not ready: store and change feed are down", Store: "down", Feed: "down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, dev, tt.change)
			r := e.do(t, req{method: "GET", path: "/readyz"})
			mustStatus(t, r, http.StatusServiceUnavailable)
			var got readiness
			r.decode(t, &got)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestInternalErrors: a store failure and a panic answer a bare 500, and
// the real error is logged once.
func TestInternalErrors(t *testing.T) {
	e := newEnv(t, dev, func(c *Config) { c.Store = brokenStore{Store: c.Store} })
	tests := []struct {
		path, secret string
	}{
		{"/api/orders/0123456789abcdef01234567", "input/output error"},
		{"/api/rooms/lobby/messages", "index out of range"},
	}
	for _, tt := range tests {
		r := e.do(t, req{method: "GET", path: tt.path})
		if r.status != http.StatusInternalServerError || r.errText() != msgInternal {
			t.Errorf("GET %s: got %d %s, want 500 internal error", tt.path, r.status, r.body)
		}
		if strings.Contains(string(r.body), tt.secret) {
			t.Errorf("GET %s: the answer leaks %q", tt.path, tt.secret)
		}
		if n := strings.Count(e.logs.String(), tt.secret); n != 1 {
			t.Errorf("GET %s: %q logged %d times, want once; logs:\n%s", tt.path, tt.secret, n, e.logs.String())
		}
	}
}

// TestReadyzWhileWritesFail: while every write fails (here the store file
// may not grow, as on a full disk) /readyz says the store is down, and it
// says ready again by itself once writes can succeed, with no other write.
// It limits the whole process's file size, so it must not run in parallel.
func TestReadyzWhileWritesFail(t *testing.T) {
	dir := t.TempDir()
	b, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	e := newEnv(t, dev, func(c *Config) { c.Store = b })
	post := func(text string) response {
		return e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages",
			body: fmt.Sprintf(`{"author":"a","text":%q}`, text)})
	}
	mustStatus(t, post("before"), http.StatusCreated)
	mustStatus(t, e.do(t, req{method: "GET", path: "/readyz"}), http.StatusOK)

	st, err := os.Stat(filepath.Join(dir, "changecast.db"))
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	limited := old
	limited.Cur = uint64(st.Size())
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limited); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	failed := false
	for i := 0; !failed && i < 1000; i++ {
		failed = post(strings.Repeat("y", store.MaxTextLen)).status == http.StatusInternalServerError
	}
	if !failed {
		t.Fatal("no write failed with the file size limited")
	}
	r := e.do(t, req{method: "GET", path: "/readyz"})
	mustStatus(t, r, http.StatusServiceUnavailable)
	var got readiness
	r.decode(t, &got)
	if want := (readiness{Error: "not ready: store is down", Store: "down", Feed: "ok"}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}

	restore()
	for deadline := time.Now().Add(30 * time.Second); ; {
		r := e.do(t, req{method: "GET", path: "/readyz"})
		if r.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d 30s after writes can succeed again: %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mustStatus(t, post("after"), http.StatusCreated)
}

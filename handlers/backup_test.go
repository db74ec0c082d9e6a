package handlers

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"changecast/store/bolt"
)

// getBackup asks for a backup with header h set and returns the answer,
// its trailer and the error of the request or of reading the body.
func getBackup(url string, h map[string]string) (response, http.Header, error) {
	hr, err := http.NewRequest(http.MethodGet, url+"/api/backup", nil)
	if err != nil {
		return response{}, nil, err
	}
	for k, v := range h {
		hr.Header.Set(k, v)
	}
	res, err := restClient.Do(hr)
	if err != nil {
		return response{}, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: body}, res.Trailer, err
}

// TestBackupAccess checks who may take a backup: staff with a token in
// the Authorization header; for everyone else (a customer, no token, a
// bad one, a staff token in the cookie or the query) the route does
// not exist. What staff gets is a store file Inspect accepts, holding
// what was written, with its size in the trailer.
func TestBackupAccess(t *testing.T) {
	e := newEnv(t)
	e.createOrder(t, "alice")
	staff := token(t, "kitchen", RoleStaff, "*")
	for _, tt := range []struct {
		name string
		h    map[string]string
		path string
	}{
		{"no token", nil, ""},
		{"customer", map[string]string{"Authorization": "Bearer " + token(t, "alice", RoleCustomer, "*")}, ""},
		{"bad token", map[string]string{"Authorization": "Bearer " + staff + "x"}, ""},
		{"basic auth", map[string]string{"Authorization": "Basic a2l0Y2hlbjpwdw=="}, ""},
		{"staff cookie", map[string]string{"Cookie": CookieName + "=" + staff}, ""},
		{"staff query token", nil, "?" + QueryTokenParam + "=" + staff},
	} {
		r, _, err := getBackup(e.url, tt.h)
		if tt.path != "" {
			r = e.do(t, req{method: "GET", path: "/api/backup" + tt.path})
		}
		if err != nil || r.status != http.StatusNotFound || r.errText() != "no such route" {
			t.Errorf("%s: got %d %.80q, %v; want 404 no such route", tt.name, r.status, r.body, err)
		}
	}

	r, trailer, err := getBackup(e.url, map[string]string{"Authorization": "Bearer " + staff})
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("staff: got %d, %v; want 200", r.status, err)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q, want application/octet-stream", ct)
	}
	if got := trailer.Get(HeaderBackupSize); got != strconv.Itoa(len(r.body)) {
		t.Errorf("trailer %s = %q, body %d bytes", HeaderBackupSize, got, len(r.body))
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, r.body, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := bolt.Inspect(path)
	if err != nil {
		t.Fatalf("Inspect of the copy: %v", err)
	}
	if rep.Orders != 1 || rep.Changes != 1 {
		t.Errorf("the copy holds %d orders and %d changes, want 1 and 1", rep.Orders, rep.Changes)
	}
}

// TestBackupDev: in dev mode anyone on the machine may take one.
func TestBackupDev(t *testing.T) {
	e := newEnv(t, dev)
	r, _, err := getBackup(e.url, nil)
	if err != nil || r.status != http.StatusOK || len(r.body) == 0 {
		t.Errorf("dev mode: got %d with %d bytes, %v; want a copy", r.status, len(r.body), err)
	}
}

// stubBackup is the store with Backup replaced.
type stubBackup struct {
	Store
	backup func(ctx context.Context, w io.Writer) (int64, error)
}

func (s stubBackup) Backup(ctx context.Context, w io.Writer) (int64, error) { return s.backup(ctx, w) }

// TestBackupWithoutEmbeddedStore: a store that cannot copy itself
// (MongoDB) answers staff 501 naming mongodump, and others still 404.
func TestBackupWithoutEmbeddedStore(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Store = struct{ Store }{c.Store} })
	r, _, _ := getBackup(e.url, map[string]string{"Authorization": "Bearer " + token(t, "kitchen", RoleStaff)})
	if r.status != http.StatusNotImplemented || !strings.Contains(r.errText(), "mongodump") {
		t.Errorf("staff: got %d %s, want 501 naming mongodump", r.status, r.body)
	}
	r, _, _ = getBackup(e.url, map[string]string{"Authorization": "Bearer " + token(t, "alice", RoleCustomer)})
	if r.status != http.StatusNotFound {
		t.Errorf("customer: got %d %s, want 404", r.status, r.body)
	}
}

// TestBackupOneAtATime: a second backup while one runs is 429 with
// Retry-After, and a copy that fails half way is a broken answer, never
// a short body that ends cleanly.
func TestBackupOneAtATime(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	fail := errors.New("disk read failed")
	e := newEnv(t, dev, func(c *Config) {
		c.Store = stubBackup{Store: c.Store, backup: func(ctx context.Context, w io.Writer) (int64, error) {
			n, _ := w.Write([]byte("half a copy"))
			close(started)
			<-release
			return int64(n), fail
		}}
	})
	type result struct {
		r   response
		err error
	}
	first := make(chan result, 1)
	go func() {
		r, _, err := getBackup(e.url, nil)
		first <- result{r, err}
	}()
	<-started
	r, _, err := getBackup(e.url, nil)
	if err != nil || r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Errorf("second backup: got %d %s (Retry-After %q), %v; want 429 with Retry-After", r.status, r.body, r.header.Get("Retry-After"), err)
	}
	close(release)
	res := <-first
	if res.r.status != http.StatusOK || res.err == nil {
		t.Errorf("failed copy: got %d with %q and read error %v; want 200 then a broken body", res.r.status, res.r.body, res.err)
	}
}

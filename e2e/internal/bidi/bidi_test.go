package bidi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFirefox starts Firefox, loads a page from a real server, evaluates
// scripts of every decoded type, sees the page's console error and an
// uncaught exception, and closes with no process of Firefox's group left.
func TestFirefox(t *testing.T) {
	path := FirefoxForTest(t)
	page := `<!doctype html><title>t</title><p id="p">hello</p>
<script>console.error("boom from the page"); setTimeout(() => { throw new Error("uncaught later") }, 0)</script>`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := Start(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	pid := b.Pid()
	closed := false
	defer func() {
		if !closed {
			b.Close()
		}
	}()
	tab, err := b.FirstTab(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Navigate(ctx, srv.URL+"/"); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		expr string
		want any
	}{
		{`document.getElementById("p").textContent`, "hello"},
		{`location.origin`, srv.URL},
		{`6 * 7`, 42.0},
		{`1 / 0`, math.Inf(1)},
		{`true`, true},
		{`null`, nil},
		{`undefined`, nil},
		{`[1, "two", [false]]`, []any{1.0, "two", []any{false}}},
		{`({a: 1, b: ["x"]})`, map[string]any{"a": 1.0, "b": []any{"x"}}},
		{`new Promise(r => setTimeout(() => r("later"), 10))`, "later"},
	} {
		got, err := tab.Eval(ctx, c.expr)
		if err != nil {
			t.Errorf("eval %s: %v", c.expr, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("eval %s: got %#v, want %#v", c.expr, got, c.want)
		}
	}
	if got, err := tab.Eval(ctx, `0 / 0`); err != nil || !math.IsNaN(got.(float64)) {
		t.Errorf("eval 0/0: got %v, %v; want NaN", got, err)
	}
	_, err = tab.Eval(ctx, `Promise.reject(new Error("nope"))`)
	var se *ScriptError
	if !errors.As(err, &se) || !strings.Contains(se.Text, "nope") {
		t.Errorf("eval of a rejected promise: got %v, want a ScriptError saying nope", err)
	}

	// A second tab works on its own.
	tab2, err := b.NewTab(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab2.Navigate(ctx, srv.URL+"/?second"); err != nil {
		t.Fatal(err)
	}
	if got, err := tab2.Eval(ctx, `location.search`); err != nil || got != "?second" {
		t.Errorf("second tab: got %v, %v; want ?second", got, err)
	}

	// Both pages' console error and uncaught exception are reported.
	var consoleErr, uncaught int
	for deadline := time.Now().Add(30 * time.Second); ; {
		for _, e := range b.Logs() {
			switch {
			case e.Type == "console" && e.Level == "error" && e.Text == "boom from the page":
				consoleErr++
			case e.Type == "javascript" && e.Level == "error" && strings.Contains(e.Text, "uncaught later"):
				uncaught++
			}
		}
		if consoleErr >= 2 && uncaught >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log entries: %d console errors and %d uncaught exceptions, want 2 of each", consoleErr, uncaught)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A closed tab is gone: evaluating in it fails.
	if err := tab2.Close(ctx); err != nil {
		t.Fatalf("close the second tab: %v", err)
	}
	if _, err := tab2.Eval(ctx, `1`); err == nil {
		t.Error("eval in a closed tab: no error, want one")
	}

	closed = true
	if err := b.Close(); err != nil {
		t.Errorf("close: %v\n%s", err, b.Output())
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("after Close, Firefox's process group %d still has processes (kill 0: %v)", pid, err)
	}
	if _, err := tab.Eval(ctx, `1`); !errors.Is(err, ErrClosed) {
		t.Errorf("eval after Close: got %v, want ErrClosed", err)
	}
}

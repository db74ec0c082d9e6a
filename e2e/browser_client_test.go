package e2e

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"changecast/store"
	"changecast/store/bolt"
)

// clientTestPage is the page of TestBrowserClientModule, served from
// another origin than changecast's (BASE). It imports the client module
// from changecast, watches the topics named in its own query string, and
// records what the feed reports: window.got (typed events), window.states
// (status changes) and window.esStats (EventSource instances: how many were
// created and the most that were open at once).
const clientTestPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>changecast.js test page</title></head>
<body>
<script type="module">
const Native = window.EventSource;
window.esStats = { created: 0, open: 0, max: 0, urls: [] };
window.EventSource = class extends Native {
  constructor(url, init) {
    super(url, init);
    esStats.created++;
    esStats.open++;
    esStats.max = Math.max(esStats.max, esStats.open);
    esStats.urls.push(String(url));
  }
  close() {
    if (!this.__closed) esStats.open--;
    this.__closed = true;
    super.close();
  }
};
const { connect } = await import("BASE/changecast.js");
window.got = [];
window.states = [];
const feed = connect({ url: "BASE/api/events", topics: new URLSearchParams(location.search).getAll("topic"), storageKey: "test.lastEventId" });
feed.on("status", (s) => states.push(s));
for (const type of ["snapshot", "message", "order", "reset", "expired", "refused"]) {
  feed.on(type, (e) => got.push(e));
}
window.feed = feed;
</script>
</body></html>`

// TestBrowserClientModule drives static/changecast.js in a real Chromium
// from a page on another origin (CORS_ORIGINS names it) against the built
// binary:
//   - a SIGKILL of the server, seconds down (with writes into its data
//     directory meanwhile), then a router's 503, then the server back on the
//     same port and directory: every message reaches the page exactly once,
//     with no reset and no second snapshot, and the feed reports live →
//     reconnecting → offline (503) → live, with never two EventSources open;
//   - setTopics moves to another topic set from the same position: a write
//     racing the switch arrives exactly once, and the new connection is a
//     resume (lastEventId, no snapshot);
//   - a refused topic (an unknown order) is reported as `refused` with 404
//     while the other topic keeps streaming; when every topic is refused
//     the feed says so per topic and goes offline with the HTTP status.
func TestBrowserClientModule(t *testing.T) {
	chrome := browserChromium(t)
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port, dataDir := freePort(t), t.TempDir()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, strings.ReplaceAll(clientTestPage, "BASE", base))
	}))
	t.Cleanup(page.Close)
	logs := &lockedBuffer{}
	cmd := startClientBinary(t, t, bin, port, dataDir, logs, "CORS_ORIGINS="+page.URL)

	p := newBrowserPage(t, browserAllocator(t, chrome), "client")
	t.Cleanup(func() {
		if t.Failed() {
			p.saveScreenshot(t, os.TempDir(), "client-failure")
			t.Logf("page state: %s", p.clientState(t))
			t.Logf("server log:\n%s", logs)
		}
	})
	p.do(t, "open the test page", chromedp.Navigate(page.URL+"/?topic=rooms/a"))
	p.waitUntil(t, browserWait, "the feed is live", `window.feed?.state === "live"`)
	p.waitUntil(t, browserWait, "the room snapshot arrives", `got.some(e => e.type === "snapshot" && e.topic === "rooms/a")`)

	var sent []store.Message // every message written to rooms/a, in order
	post := func(t *testing.T, room, text string) store.Message {
		t.Helper()
		var m store.Message
		browserREST(t, http.MethodPost, base+"/api/rooms/"+room+"/messages",
			fmt.Sprintf(`{"author":"tester","text":%s}`, browserJS(text)), "", http.StatusCreated, &m)
		return m
	}
	// checkExactlyOnce fails unless each message of want arrived exactly once
	// and no other message event arrived.
	checkExactlyOnce := func(t *testing.T, want []store.Message) {
		t.Helper()
		var got map[string]int
		p.eval(t, `got.filter(e => e.type === "message").reduce((m, e) => (m[e.data.message.id] = (m[e.data.message.id] || 0) + 1, m), {})`, &got)
		for _, m := range want {
			if got[m.ID] != 1 {
				t.Errorf("message %s (%q) arrived %d times, want 1", m.ID, m.Text, got[m.ID])
			}
			delete(got, m.ID)
		}
		for id, n := range got {
			t.Errorf("message %s arrived %d times and was never written to a watched room", id, n)
		}
	}
	waitFor := func(t *testing.T, m store.Message) {
		t.Helper()
		p.waitUntil(t, browserWait, fmt.Sprintf("%q arrives", m.Text),
			fmt.Sprintf(`got.some(e => e.type === "message" && e.data.message.id === %s)`, browserJS(m.ID)))
	}

	outer := t
	ok := t.Run("SIGKILL restart with seconds down and a 503", func(t *testing.T) {
		for i := range 3 {
			sent = append(sent, post(t, "a", fmt.Sprintf("before the kill #%d", i)))
		}
		waitFor(t, sent[len(sent)-1])
		statesBefore := p.evalInt(t, `states.length`)

		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		killed := time.Now()
		p.waitUntil(t, browserWait, "the feed notices the server is gone", `feed.state !== "live"`)

		func() {
			b, err := bolt.Open(dataDir, bolt.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("open the data directory while the server is down: %v", err)
			}
			defer b.Close()
			for i := range 2 {
				m, err := b.PostMessage(t.Context(), "a", "tester", fmt.Sprintf("written while down #%d", i))
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, m)
			}
		}()
		// The outage lasts a few seconds (the scenario, not a synchronization):
		// longer than the stream's retry interval, so the browser's own
		// attempts fail too.
		if d := 3*time.Second - time.Since(killed); d > 0 {
			time.Sleep(d)
		}
		stub := startCORSStub(t, port, page.URL)
		p.waitUntil(t, browserWait, "the feed reports the 503", `feed.state === "offline" && states.at(-1).httpStatus === 503`)
		stub.stop(t)

		cmd = startClientBinary(t, outer, bin, port, dataDir, logs, "CORS_ORIGINS="+page.URL)
		sent = append(sent, post(t, "a", "right after the restart"))
		p.waitUntil(t, browserWait, "the feed is live again", `feed.state === "live"`)
		for i := range 2 {
			sent = append(sent, post(t, "a", fmt.Sprintf("after the page is back #%d", i)))
		}
		// One stream delivers in log order: once the last write arrived,
		// every earlier one had its chance.
		waitFor(t, sent[len(sent)-1])
		t.Logf("down for %v; %d EventSources created", time.Since(killed).Round(100*time.Millisecond), p.evalInt(t, `esStats.created`))

		checkExactlyOnce(t, sent)
		if n := p.evalInt(t, `got.filter(e => e.type === "snapshot").length`); n != 1 {
			t.Errorf("got %d snapshots, want 1: the feed must resume, not start over", n)
		}
		if n := p.evalInt(t, `got.filter(e => e.type === "reset").length`); n != 0 {
			t.Errorf("got %d resets over the same data directory, want 0", n)
		}
		var states []string
		p.eval(t, fmt.Sprintf(`states.slice(%d).map(s => s.state)`, statesBefore-1), &states)
		if !statesInOrder(states, "live", "reconnecting", "offline", "live") || states[len(states)-1] != "live" {
			t.Errorf("status changes around the outage: %v; want live, reconnecting, offline (503), then live", states)
		}
		if n := p.evalInt(t, `esStats.max`); n != 1 {
			t.Errorf("%d EventSources were open at once, want 1", n)
		}
		p.checkNoProblems(t, false)
	})
	if !ok {
		return
	}

	t.Run("setTopics keeps the position", func(t *testing.T) {
		snapshots := p.evalInt(t, `got.filter(e => e.type === "snapshot").length`)
		sets := [][]string{{"rooms/a", "rooms/b"}, {"rooms/b"}, {"rooms/a", "rooms/b"}, {"rooms/a"}}
		var racing []store.Message
		for i, set := range sets {
			// A write whose event is likely still on its way when the
			// topics change: it arrives on the old connection or on the
			// new one, never on both, and is never skipped.
			racing = append(racing, post(t, "a", fmt.Sprintf("racing setTopics #%d", i)))
			var lastBefore, opened string
			p.eval(t, fmt.Sprintf(`(() => { const id = feed.lastEventId; feed.setTopics(%s); return id; })()`, mustJSON(set)), &lastBefore)
			p.eval(t, `esStats.urls.at(-1)`, &opened)
			if u, err := url.Parse(opened); err != nil || u.Query().Get("lastEventId") != lastBefore || lastBefore == "" {
				t.Errorf("after setTopics the new EventSource opens %s; want lastEventId=%s", opened, lastBefore)
			}
			p.waitUntil(t, browserWait, "the feed is live on the new topics", `feed.state === "live"`)
			for _, topic := range set {
				m := post(t, strings.TrimPrefix(topic, "rooms/"), "after setTopics to "+strings.Join(set, ","))
				sent = append(sent, m)
				waitFor(t, m)
			}
		}
		// #0 and #3: rooms/a watched before and after; #2: written after the
		// last event of the old set (rooms/b), so the new set {a, b} resumes
		// before it. #1 was written to rooms/a just before the switch to
		// {b}: the old connection may or may not have delivered it.
		sent = append(sent, racing[0], racing[2], racing[3])
		var n1 int
		p.eval(t, fmt.Sprintf(`got.filter(e => e.type === "message" && e.data.message.id === %s).length`, browserJS(racing[1].ID)), &n1)
		if n1 > 0 {
			sent = append(sent, racing[1])
		}
		checkExactlyOnce(t, sent)
		if n := p.evalInt(t, `got.filter(e => e.type === "snapshot").length`); n != snapshots {
			t.Errorf("setTopics brought %d snapshots: it must resume from the last id, not start over", n-snapshots)
		}
		if n := p.evalInt(t, `esStats.max`); n != 1 {
			t.Errorf("%d EventSources were open at once, want 1", n)
		}
		p.checkNoProblems(t, true)
	})

	t.Run("a refused topic while the others stream", func(t *testing.T) {
		unknown := "0123456789abcdef01234567"
		topic := "orders/" + unknown
		p.eval(t, fmt.Sprintf(`(feed.setTopics(["rooms/a", %s]), true)`, browserJS(topic)), new(bool))
		p.waitUntil(t, browserWait, "the unknown order is reported refused",
			fmt.Sprintf(`got.some(e => e.type === "refused" && e.topic === %s)`, browserJS(topic)))
		var refused struct {
			ID     string
			Status int
			Error  string
		}
		p.eval(t, fmt.Sprintf(`(() => { const e = got.findLast(e => e.type === "refused" && e.topic === %s); return {id: e.id, status: e.data.status, error: e.data.error}; })()`, browserJS(topic)), &refused)
		if refused.Status != http.StatusNotFound || refused.Error == "" || refused.ID != "" {
			t.Errorf("refused event for an unknown order: %+v; want status 404, an error text and no id", refused)
		}
		if n := p.evalInt(t, `got.filter(e => e.type === "refused" && e.topic === "rooms/a").length`); n != 0 {
			t.Errorf("the room was reported refused %d times; only the unknown order is", n)
		}
		p.waitUntil(t, browserWait, "the feed stays live", `feed.state === "live"`)
		m := post(t, "a", "the room streams beside a refused order")
		waitFor(t, m)
		if !p.evalBool(t, fmt.Sprintf(`feed.refused.get(%s)?.status === 404`, browserJS(topic))) {
			t.Errorf("feed.refused does not list %s with 404", topic)
		}

		// Every topic refused: the answer is the error status; the feed
		// says so per topic and waits (a 4xx does not fix itself soon).
		other := "orders/89abcdef0123456789abcdef"
		p.eval(t, fmt.Sprintf(`(feed.setTopics([%s]), true)`, browserJS(other)), new(bool))
		p.waitUntil(t, browserWait, "the feed goes offline with 404", `feed.state === "offline" && states.at(-1).httpStatus === 404 && states.at(-1).retryInMs >= 10000`)
		p.waitUntil(t, browserWait, "the only topic is reported refused",
			fmt.Sprintf(`got.some(e => e.type === "refused" && e.topic === %s && e.data.status === 404)`, browserJS(other)))

		// Back to a good set: live at once, from the same position.
		p.eval(t, `(feed.setTopics(["rooms/a"]), true)`, new(bool))
		p.waitUntil(t, browserWait, "live again on the room", `feed.state === "live"`)
		waitFor(t, post(t, "a", "back on the room alone"))
		if n := p.evalInt(t, `esStats.max`); n != 1 {
			t.Errorf("%d EventSources were open at once, want 1", n)
		}
		p.checkNoProblems(t, false)
	})
}

// statesInOrder reports whether want occurs in got as a subsequence.
func statesInOrder(got []string, want ...string) bool {
	i := 0
	for _, s := range got {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}

func mustJSON(v []string) string {
	var b strings.Builder
	b.WriteString("[")
	for i, s := range v {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(browserJS(s))
	}
	b.WriteString("]")
	return b.String()
}

func (p *browserPage) evalBool(tb testing.TB, expr string) bool {
	tb.Helper()
	var b bool
	p.eval(tb, expr, &b)
	return b
}

// clientState summarises the test page for a failure message.
func (p *browserPage) clientState(tb testing.TB) string {
	var s string
	p.eval(tb, `JSON.stringify({state: feed.state, last: feed.lastEventId, states: states.slice(-12), es: esStats,
		got: got.slice(-15).map(e => [e.type, e.topic, e.id, e.type === "message" ? e.data.message.text : JSON.stringify(e.data).slice(0, 80)].join(" "))}, null, 1)`, &s)
	return s
}

// startClientBinary runs the built binary with -dev on port and dataDir,
// with env added, its output into logs, and waits until it answers /healthz.
// The process is killed when owner's test ends.
func startClientBinary(tb, owner testing.TB, bin string, port int, dataDir string, logs *lockedBuffer, env ...string) *exec.Cmd {
	tb.Helper()
	return startBinaryWith(tb, owner, bin, port, dataDir, logs, env...)
}

// startCORSStub answers every request on port with 503, as a router does
// while no instance is up, and lets origin read the answer.
func startCORSStub(tb testing.TB, port int, origin string) *browserStub {
	tb.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		tb.Fatalf("listen for the 503 stand-in: %v", err)
	}
	s := &browserStub{
		srv: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"no instance available"}`)
		})},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s
}

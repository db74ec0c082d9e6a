package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"changecast/store"
)

// tabsShare is the share option the tabs tests give the client module.
// Set it to false to see each of them fail without sharing.
const tabsShare = true

// tabsPage is the page of the tabs tests, served on another origin than
// changecast's (BASE), as an app's pages are. It imports the client module
// from changecast, watches the topics in its query string and records:
// window.got (each event: type, id, topic and the message's id), esLog
// (each EventSource this tab made: when it was created and opened, epoch
// ms), window.channels (each BroadcastChannel it made) and window.rest()
// fetches from changecast's origin, as a page's own REST calls do. The
// query parameter token is the feed's access token.
const tabsPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>changecast tabs</title></head>
<body>
<script type="module">
const Native = window.EventSource;
window.esLog = [];
window.EventSource = class extends Native {
  constructor(url, init) {
    super(url, init);
    const r = { url: String(url), created: Date.now(), opened: 0 };
    esLog.push(r);
    this.addEventListener("open", () => r.opened ||= Date.now());
  }
};
// ?nolocks=1: a browser without Web Locks.
if (new URLSearchParams(location.search).get("nolocks") === "1") Object.defineProperty(Navigator.prototype, "locks", { get: () => undefined });
const NativeChannel = window.BroadcastChannel;
window.channels = [];
window.BroadcastChannel = class extends NativeChannel {
  constructor(name) {
    super(name);
    channels.push(this);
  }
};
window.rest = () => fetch("BASE/api/rooms/tabs-rest/messages?limit=1").then((r) => r.status, (e) => String(e));
window.got = [];
window.startPos = sessionStorage.getItem("tabs.lastEventId") || "";
// Not awaited: the page loads even while the module waits for a connection.
import("BASE/changecast.js").then(({ connect }) => {
  const q = new URLSearchParams(location.search);
  const feed = connect({ url: "BASE/api/events", topics: q.getAll("topic"), storageKey: "tabs.lastEventId", share: q.get("share") === "1", token: q.get("token") || "" });
  for (const type of ["snapshot", "message", "order", "reset", "expired", "refused", "presence"]) {
    feed.on(type, (e) => got.push({ type, id: e.id, topic: e.topic, mid: e.data?.message?.id ?? "" }));
  }
  window.feed = feed;
});
</script>
</body></html>`

// tabsBrowser opens and closes tabs of one browser (one profile: they
// share an origin's connections, locks and channels).
type tabsBrowser struct {
	open     func(tb testing.TB, name, url string) jsPage
	navigate func(tb testing.TB, p jsPage, url string)
	close    func(tb testing.TB, p jsPage)
	crash    func(tb testing.TB, p jsPage) // nil where the engine cannot crash a tab
}

// tabsTab is one open tab of the scenario and the topics it watches.
type tabsTab struct {
	name   string
	p      jsPage
	topics []string
	from   int // how many messages were written before it opened (its snapshot holds those)
	snaps  int // snapshots it must have per topic: 1, or 0 when it resumed
}

// tabsServer builds and starts changecast (with env, and -dev unless env
// sets JWT_SECRET) and serves tabsPage on another origin. It returns changecast's base URL, the page's URL, the
// data directory and a function that starts the binary again.
func tabsServer(t *testing.T, env ...string) (base, pagesURL, dataDir string, start func() *exec.Cmd, cmd *exec.Cmd) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	dataDir = t.TempDir()
	base = fmt.Sprintf("http://127.0.0.1:%d", port)
	html := strings.ReplaceAll(tabsPage, "BASE", base)
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, html)
	}))
	t.Cleanup(pages.Close)
	logs := &lockedBuffer{}
	start = func() *exec.Cmd {
		args := []string{"-dev"}
		if slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "JWT_SECRET=") }) {
			args = nil
		}
		return startBinaryArgs(t, t, bin, args, port, dataDir, logs, append([]string{"CORS_ORIGINS=" + pages.URL}, env...)...)
	}
	cmd = start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return base, pages.URL, dataDir, start, cmd
}

// tabsScenario runs the sharing scenario in one engine; see TestTabsChromium.
func tabsScenario(t *testing.T, br tabsBrowser) {
	base, pagesURL, dataDir, start, cmd := tabsServer(t)
	pages := struct{ URL string }{pagesURL}

	var tabs []*tabsTab
	opened := 0
	// sent is every message written, in log order (writes are one at a
	// time): [topic, message id].
	var sent [][2]string
	share := "0"
	if tabsShare {
		share = "1"
	}
	open := func(t *testing.T, topics ...string) *tabsTab {
		q := "?share=" + share
		for _, tp := range topics {
			q += "&topic=" + tp
		}
		tab := &tabsTab{name: fmt.Sprintf("tab%d", opened), topics: topics, snaps: 1}
		opened++
		tab.from = len(sent)
		tab.p = br.open(t, tab.name, pages.URL+"/"+q)
		tabs = append(tabs, tab)
		return tab
	}
	streams := func(t *testing.T) int { return int(scrape(t, base, "changecast_streams_open")) }
	// settle waits until every tab's feed is live and, when sharing, one
	// tab leads and the others follow; then the server holds one stream.
	settle := func(t *testing.T) {
		t.Helper()
		for _, tab := range tabs {
			tab.p.waitUntil(t, browserWait, tab.name+"'s feed is live", `window.feed?.state === "live"`)
		}
		if !tabsShare {
			return
		}
		deadline := time.Now().Add(browserWait)
		for {
			leaders := 0
			for _, tab := range tabs {
				var role string
				tab.p.eval(t, `feed.role`, &role)
				if role == "lead" {
					leaders++
				} else if role != "follow" {
					leaders = -100
				}
			}
			if leaders == 1 && streams(t) == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d tabs: not one leader and one server stream within %v (%d streams open)", len(tabs), browserWait, streams(t))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	post := func(t *testing.T, room, text string) store.Message {
		t.Helper()
		var m store.Message
		browserREST(t, http.MethodPost, base+"/api/rooms/"+room+"/messages", fmt.Sprintf(`{"author":"tabs","text":%s}`, browserJS(text)), "", http.StatusCreated, &m)
		sent = append(sent, [2]string{"rooms/" + room, m.ID})
		return m
	}
	// checkAll waits until last reaches the tabs that watch its room, then
	// checks that each tab received each message of its topics written
	// since it opened once, in order, and one snapshot per topic.
	checkAll := func(t *testing.T, last store.Message) {
		t.Helper()
		for _, tab := range tabs {
			if slices.Contains(tab.topics, "rooms/"+last.Room) {
				tab.p.waitUntil(t, browserWait, tab.name+" receives "+last.Text, fmt.Sprintf(`got.some(e => e.mid === %s)`, browserJS(last.ID)))
			}
		}
		for _, tab := range tabs {
			var got []struct{ Type, ID, Topic, Mid string }
			tab.p.eval(t, `got`, &got)
			var msgs []string
			snapshots := map[string]int{}
			for _, e := range got {
				if !slices.Contains(tab.topics, e.Topic) {
					t.Errorf("%s (topics %v) received a %s event of %s", tab.name, tab.topics, e.Type, e.Topic)
				}
				switch e.Type {
				case "message":
					msgs = append(msgs, e.Mid)
				case "snapshot":
					snapshots[e.Topic]++
				}
			}
			var want []string
			for _, m := range sent[tab.from:] {
				if slices.Contains(tab.topics, m[0]) {
					want = append(want, m[1])
				}
			}
			if !slices.Equal(msgs, want) {
				t.Errorf("%s (topics %v) received messages %v, want each of %v once, in order", tab.name, tab.topics, msgs, want)
			}
			for _, tp := range tab.topics {
				if snapshots[tp] != tab.snaps {
					t.Errorf("%s: %d snapshots of %s, want %d", tab.name, snapshots[tp], tp, tab.snaps)
				}
			}
		}
	}
	leader := func(t *testing.T) (int, *tabsTab) {
		t.Helper()
		for i, tab := range tabs {
			var role string
			tab.p.eval(t, `feed.role`, &role)
			if role == "lead" {
				return i, tab
			}
		}
		t.Fatal("no tab leads")
		return 0, nil
	}

	// takeover waits until a tab leads with a stream opened after since,
	// and returns how long after since that stream opened.
	takeover := func(t *testing.T, since time.Time) time.Duration {
		t.Helper()
		cond := fmt.Sprintf(`feed.role === "lead" && esLog.at(-1)?.opened >= %d`, since.UnixMilli())
		for deadline := time.Now().Add(browserWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for _, tab := range tabs {
				var opened int64
				tab.p.eval(t, fmt.Sprintf(`(%s) ? esLog.at(-1).opened : 0`, cond), &opened)
				if opened > 0 {
					return time.UnixMilli(opened).Sub(since)
				}
			}
		}
		t.Fatalf("no tab took the lead within %v", browserWait)
		return 0
	}
	// dump logs each tab's state when t failed.
	dump := func(t *testing.T) {
		if !t.Failed() {
			return
		}
		for _, tab := range tabs {
			var s string
			tab.p.eval(t, `JSON.stringify({role: window.feed?.role, state: window.feed?.state, last: window.feed?.lastEventId, es: esLog.slice(-3), got: got.slice(-8).map(e => [e.type, e.topic, e.id, e.mid].join(" "))})`, &s)
			t.Logf("%s %v: %s", tab.name, tab.topics, s)
		}
	}
	measured := map[int]int{} // tabs → server streams open
	ok := t.Run("8 tabs hold one stream", func(t *testing.T) {
		defer dump(t)
		open(t, "rooms/tabs")
		settle(t)
		measured[1] = streams(t)
		for range 7 {
			open(t, "rooms/tabs")
		}
		settle(t)
		measured[8] = streams(t)
		if measured[8] != 1 {
			t.Errorf("8 tabs: changecast_streams_open is %d, want 1", measured[8])
		}
		var last store.Message
		for i := range 5 {
			last = post(t, "tabs", fmt.Sprintf("to 8 tabs #%d", i))
		}
		checkAll(t, last)
	})
	if !ok {
		return
	}

	ok = t.Run("the leader closes, then the server restarts", func(t *testing.T) {
		defer dump(t)
		var takeovers []time.Duration
		for round := range 3 {
			i, lead := leader(t)
			before := time.Now()
			if round == 1 && br.crash != nil {
				br.crash(t, lead.p) // no pagehide: only the lock tells
			} else {
				br.close(t, lead.p)
			}
			tabs = slices.Delete(tabs, i, i+1)
			// A message written while no tab leads: the next leader's stream
			// must bring it.
			last := post(t, "tabs", fmt.Sprintf("while the leader is gone #%d", round))
			takeovers = append(takeovers, takeover(t, before))
			settle(t)
			checkAll(t, last)
		}
		slices.Sort(takeovers)
		t.Logf("takeover after the leader's tab goes (closed or crashed, to the new leader's stream open): %v, median %v", takeovers, takeovers[len(takeovers)/2])

		killedAt := sigkill(t, cmd)
		for _, m := range writeWhileDown(t, dataDir, "tabs", "written while down #0", "written while down #1") {
			sent = append(sent, [2]string{"rooms/tabs", m.ID})
		}
		stayDown(killedAt)
		cmd = start()
		var last store.Message
		for i := range 3 {
			last = post(t, "tabs", fmt.Sprintf("after the restart #%d", i))
		}
		settle(t)
		checkAll(t, last)
	})
	if !ok {
		return
	}

	ok = t.Run("a tab that comes back resumes from its own position", func(t *testing.T) {
		defer dump(t)
		// A follower leaves for another page, messages are written, and it
		// comes back (sessionStorage keeps its position): the leader's
		// stream restarts from that earlier position, the tab gets exactly
		// what it missed, and the others, who had it, get nothing twice.
		var back *tabsTab
		for _, tab := range tabs {
			var role string
			tab.p.eval(t, `feed.role`, &role)
			if role == "follow" {
				back = tab
				break
			}
		}
		var startPos string
		back.p.eval(t, `feed.lastEventId`, &startPos)
		br.navigate(t, back.p, "about:blank")
		back.from = len(sent)
		for i := range 3 {
			post(t, "tabs", fmt.Sprintf("while a tab is away #%d", i))
		}
		br.navigate(t, back.p, pages.URL+"/?share="+share+"&topic=rooms/tabs")
		var stored string
		back.p.eval(t, `startPos`, &stored)
		if stored != startPos || stored == "" {
			t.Fatalf("the tab came back with position %q, want %q", stored, startPos)
		}
		back.snaps = 0
		settle(t)
		checkAll(t, post(t, "tabs", "after the tab came back"))
	})
	if !ok {
		return
	}

	ok = t.Run("tabs with other topics get only theirs", func(t *testing.T) {
		defer dump(t)
		_, lead := leader(t)
		var pos string
		var streamsBefore int
		lead.p.eval(t, `feed.lastEventId`, &pos)
		lead.p.eval(t, `esLog.length`, &streamsBefore)
		u := open(t, "rooms/tabs-u")
		open(t, "rooms/tabs-u")
		open(t, "rooms/tabs-v")
		open(t, "rooms/tabs-u", "rooms/tabs-v")
		settle(t)
		// Tabs joining with new topics restart the leader's stream from
		// the position every tab holds (nothing was written meanwhile),
		// not from further back.
		var from []string
		lead.p.eval(t, fmt.Sprintf(`esLog.slice(%d).map((e) => new URL(e.url).searchParams.get("lastEventId"))`, streamsBefore), &from)
		if len(from) == 0 || slices.ContainsFunc(from, func(f string) bool { return f != pos }) {
			t.Errorf("the leader's streams for the new tabs resume from %v, want each from %s", from, pos)
		}
		var last store.Message
		for i := range 3 {
			post(t, "tabs", fmt.Sprintf("t #%d", i))
			post(t, "tabs-u", fmt.Sprintf("u #%d", i))
			last = post(t, "tabs-v", fmt.Sprintf("v #%d", i))
		}
		checkAll(t, last)

		// One tab moves from u to v: it gets v's messages from its own
		// position on (none written before the move), and u's no more.
		u.p.eval(t, `(feed.setTopics(["rooms/tabs-v"]), true)`, new(bool))
		moved := len(sent)
		post(t, "tabs-u", "u after the move")
		last = post(t, "tabs-v", "v after the move")
		u.p.waitUntil(t, browserWait, "the moved tab receives v", fmt.Sprintf(`got.some(e => e.mid === %s)`, browserJS(last.ID)))
		var got []string
		u.p.eval(t, `got.filter(e => e.type === "message").map(e => e.mid)`, &got)
		var want []string
		for i, m := range sent[u.from:] {
			if m[0] == "rooms/tabs-u" && u.from+i < moved || m[0] == "rooms/tabs-v" && u.from+i >= moved {
				want = append(want, m[1])
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("the tab moved from u to v received %v, want %v", got, want)
		}
		tabs = slices.DeleteFunc(tabs, func(x *tabsTab) bool { return x == u })
		br.close(t, u.p)
		settle(t)
		checkAll(t, post(t, "tabs-v", "v after the moved tab closed"))

		// A tab whose topics would take the shared stream over the
		// server's 32 topics per stream streams alone; the others go on.
		var many []string
		for i := range 30 {
			many = append(many, fmt.Sprintf("rooms/tabs-many-%d", i))
		}
		big := open(t, many...)
		big.p.waitUntil(t, browserWait, "the tab with 30 topics streams alone", `window.feed?.role === "solo" && feed.state === "live" && !feed.share`)
		for deadline := time.Now().Add(browserWait); streams(t) != 2; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("with a tab streaming alone: changecast_streams_open is %d, want 2", streams(t))
			}
		}
		checkAll(t, post(t, "tabs-many-29", "to the tab with 30 topics"))
		tabs = slices.DeleteFunc(tabs, func(x *tabsTab) bool { return x == big })
		br.close(t, big.p)
		settle(t)
	})
	if !ok {
		return
	}

	ok = t.Run("20 tabs leave the page's REST calls a connection", func(t *testing.T) {
		defer dump(t)
		for len(tabs) < 20 {
			open(t, "rooms/tabs-w")
		}
		settle(t)
		measured[20] = streams(t)
		if measured[20] != 1 {
			t.Errorf("20 tabs: changecast_streams_open is %d, want 1", measured[20])
		}
		for _, tab := range tabs {
			tab.p.eval(t, `(window.restStatus = 0, rest().then((s) => window.restStatus = s), true)`, new(bool))
		}
		for _, tab := range tabs {
			tab.p.waitUntil(t, browserWait, tab.name+"'s REST call completes", `window.restStatus === 200`)
		}
		checkAll(t, post(t, "tabs-w", "to 20 tabs"))
	})
	if !ok {
		return
	}

	t.Run("without Web Locks each tab streams alone", func(t *testing.T) {
		defer dump(t)
		before := streams(t)
		var alone []*tabsTab
		for range 2 {
			tab := &tabsTab{name: fmt.Sprintf("tab%d", opened), topics: []string{"rooms/tabs-w"}, from: len(sent), snaps: 1}
			opened++
			tab.p = br.open(t, tab.name, pages.URL+"/?nolocks=1&share="+share+"&topic=rooms/tabs-w")
			tab.p.waitUntil(t, browserWait, tab.name+" streams alone", `window.feed?.state === "live" && feed.role === "solo" && !feed.share`)
			alone = append(alone, tab)
		}
		for deadline := time.Now().Add(browserWait); streams(t) != before+2; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("two tabs without Web Locks: changecast_streams_open is %d, want %d", streams(t), before+2)
			}
		}
		tabs = append(tabs, alone...)
		checkAll(t, post(t, "tabs-w", "to tabs with and without Web Locks"))
	})
	t.Logf("server streams open: %v (tabs: streams)", measured)
}

// TestTabsChromium opens many tabs of one page (on another origin than
// changecast's, importing the client module from it) in one Chromium and
// checks that they share one stream:
//   - 8 tabs on one topic: the server's changecast_streams_open says 1 and
//     every tab gets every message once, in order, after one snapshot;
//   - the leading tab goes three times (closed, crashed with Page.crash so
//     that only its lock's release tells, closed again; another tab takes
//     over each time, and a message written meanwhile arrives), then the server is
//     SIGKILLed, written to while down and restarted on the same data:
//     every remaining tab still gets every message once, in order;
//   - tabs with other topics (and one with two) get only their topics'
//     events; a tab that changes its topics gets the new topic's messages
//     from its position on and the old one's no more;
//   - with 20 tabs, each tab's own fetch to changecast's origin completes
//     (six HTTP/1.1 connections per origin: without sharing, the seventh
//     tab's module never even loads);
//   - tabs of a browser without Web Locks each stream alone, as before
//     sharing, and get their messages too.
//
// It logs the streams open for 1, 8 and 20 tabs and the takeover times.
func TestTabsChromium(t *testing.T) {
	br := tabsChromium(t)
	br.navigate = func(tb testing.TB, p jsPage, url string) {
		tb.Helper()
		p.(*browserPage).do(tb, "open "+url, chromedp.Navigate(url))
	}
	br.crash = func(tb testing.TB, p jsPage) {
		tb.Helper()
		bp := p.(*browserPage)
		// Page.crash does not answer: its renderer is gone.
		ctx, cancel := context.WithTimeout(bp.ctx, time.Second)
		defer cancel()
		chromedp.Call(ctx, page.Crash, cdp.Empty{})
	}
	tabsScenario(t, br)
}

// closeChromiumTab closes a Chromium tab.
func closeChromiumTab(tb testing.TB, p jsPage) {
	tb.Helper()
	bp := p.(*browserPage)
	// Close the target, not the context: the first tab's context owns the
	// browser.
	id := chromedp.FromContext(bp.ctx).Target.TargetID
	if _, err := chromedp.CallBrowser(bp.ctx, target.CloseTarget, target.CloseTargetParams{TargetID: id}); err != nil {
		tb.Fatalf("%s: close: %v", bp.name, err)
	}
}

// TestTabsFirefox runs TestTabsChromium's scenario in Firefox ESR, where
// the leader's tab is closed each time (BiDi cannot crash a tab).
func TestTabsFirefox(t *testing.T) {
	tabsScenario(t, tabsFirefox(t))
}

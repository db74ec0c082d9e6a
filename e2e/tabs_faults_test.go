package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"changecast/handlers"
	"changecast/store"
)

// tabsFaults is a few tabs of tabsPage against a fresh changecast, for
// the tests of what goes wrong in a share group.
type tabsFaults struct {
	br    tabsBrowser
	base  string
	page  string // tabsPage's URL, with share=1
	tabs  map[string]jsPage
	order []string
}

func newTabsFaults(t *testing.T, br tabsBrowser, query string, env ...string) *tabsFaults {
	base, pagesURL, _, _, _ := tabsServer(t, env...)
	return &tabsFaults{br: br, base: base, page: pagesURL + "/?share=1" + query, tabs: map[string]jsPage{}}
}

// open opens a tab on topics and waits until its feed is live in role.
func (f *tabsFaults) open(t *testing.T, name, role string, topics ...string) jsPage {
	t.Helper()
	u := f.page
	for _, tp := range topics {
		u += "&topic=" + tp
	}
	p := f.br.open(t, name, u)
	f.tabs[name] = p
	f.order = append(f.order, name)
	p.waitUntil(t, browserWait, name+" is live as "+role, fmt.Sprintf(`window.feed?.state === "live" && feed.role === %q`, role))
	return p
}

// messages returns the ids of the messages tab name received, in order.
func (f *tabsFaults) messages(t *testing.T, name string) []string {
	t.Helper()
	var got []string
	f.tabs[name].eval(t, `got.filter((e) => e.type === "message").map((e) => e.mid)`, &got)
	return got
}

// waitFor waits until tab name received message id.
func (f *tabsFaults) waitFor(t *testing.T, name string, timeout time.Duration, m store.Message) {
	t.Helper()
	f.tabs[name].waitUntil(t, timeout, name+" receives "+m.Text, fmt.Sprintf(`got.some((e) => e.mid === %s)`, browserJS(m.ID)))
}

// dump logs each tab's state when t failed.
func (f *tabsFaults) dump(t *testing.T) {
	if !t.Failed() {
		return
	}
	for _, name := range f.order {
		var s string
		f.tabs[name].eval(t, `JSON.stringify({role: window.feed?.role, state: window.feed?.state, last: window.feed?.lastEventId, es: esLog.slice(-3), got: got.slice(-8).map(e => [e.type, e.topic, e.id, e.mid].join(" "))})`, &s)
		t.Logf("%s: %s", name, s)
	}
}

func (f *tabsFaults) post(t *testing.T, room, text string) store.Message {
	t.Helper()
	var m store.Message
	browserREST(t, http.MethodPost, f.base+"/api/rooms/"+room+"/messages", fmt.Sprintf(`{"author":"tabs","text":%s}`, browserJS(text)), "", http.StatusCreated, &m)
	return m
}

func ids(ms ...store.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// tabsTakeoverScenario: tab M changes its topics just before the leader
// goes, and the leader never heard it (its cover is gone, so it drops the
// events relayed meanwhile, and its position stays behind). The tab that
// takes over must resume from M's position, not from its own.
func tabsTakeoverScenario(t *testing.T, br tabsBrowser) {
	f := newTabsFaults(t, br, "")
	defer f.dump(t)
	a := f.open(t, "A", "lead", "rooms/tk")
	f.open(t, "L", "follow", "rooms/tk") // first in line for the lock
	m := f.open(t, "M", "follow", "rooms/tk")
	m0 := f.post(t, "tk", "m0")
	for _, name := range f.order {
		f.waitFor(t, name, browserWait, m0)
	}
	// A stops hearing hellos: it goes before it could restart its stream
	// for M's new topics.
	a.eval(t, `(channels.forEach((c) => { const h = c.onmessage; c.onmessage = (e) => e.data?.k === "hello" || h.call(c, e); }), true)`, new(bool))
	m.eval(t, `(feed.setTopics(["rooms/tk", "rooms/tk2"]), true)`, new(bool))
	// L hears M's hello, with M's position and topics.
	time.Sleep(200 * time.Millisecond)
	m1, m2 := f.post(t, "tk", "m1"), f.post(t, "tk", "m2")
	f.waitFor(t, "L", browserWait, m2)
	br.close(t, a)
	delete(f.tabs, "A")
	f.order = slices.DeleteFunc(f.order, func(n string) bool { return n == "A" })
	f.tabs["L"].waitUntil(t, browserWait, "L leads", `feed.role === "lead"`)
	m3 := f.post(t, "tk", "m3")
	for _, name := range f.order {
		f.waitFor(t, name, browserWait, m3)
		if got, want := f.messages(t, name), ids(m0, m1, m2, m3); !slices.Equal(got, want) {
			t.Errorf("%s received messages %v, want each of %v once, in order", name, got, want)
		}
	}
}

// TestTabsTakeoverChromium: when the leader goes just as a follower changes
// its topics (the leader never heard of the change, the follower dropped
// what was relayed meanwhile), the next leader resumes from that
// follower's position: it gets every message once, in order.
func TestTabsTakeoverChromium(t *testing.T) {
	tabsTakeoverScenario(t, tabsChromium(t))
}

// TestTabsTakeoverFirefox is TestTabsTakeoverChromium in Firefox ESR.
func TestTabsTakeoverFirefox(t *testing.T) {
	tabsTakeoverScenario(t, tabsFirefox(t))
}

// TestTabsRefused503Chromium: a room the app's backend cannot be asked
// about is refused with 503, which docs/api.md says to retry: the shared
// stream (leader and follower) is reopened with the room after about 5 s,
// and once the backend answers yes the room's messages arrive and
// feed.refused no longer lists it.
func TestTabsRefused503Chromium(t *testing.T) {
	var up atomic.Bool
	var asked atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]bool{"allowed": true})
	}))
	t.Cleanup(backend.Close)
	secret := strings.Repeat("s", 40)
	tok, err := handlers.IssueToken([]byte(secret), "alice", handlers.RoleCustomer, []string{"lobby"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	staff, err := handlers.IssueToken([]byte(secret), "kitchen", handlers.RoleStaff, []string{"*"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := newTabsFaults(t, tabsChromium(t), "&token="+tok, "JWT_SECRET="+secret, "ROOM_AUTH_URL="+backend.URL+"/check", "ROOM_AUTH_SECRET=room-backend-secret-0123")
	defer f.dump(t)
	f.open(t, "lead", "lead", "rooms/lobby", "rooms/kitchen")
	f.open(t, "follow", "follow", "rooms/lobby", "rooms/kitchen")
	for _, name := range f.order {
		f.tabs[name].waitUntil(t, browserWait, name+" hears rooms/kitchen refused with 503", `got.some((e) => e.type === "refused" && e.topic === "rooms/kitchen") && feed.refused.get("rooms/kitchen")?.status === 503`)
	}
	up.Store(true)
	upAt := time.Now()
	var m store.Message
	if st, _ := doJSON(t, http.MethodPost, f.base+"/api/rooms/kitchen/messages", map[string]string{"text": "back"}, http.Header{"Authorization": {"Bearer " + staff}}, &m); st != http.StatusCreated {
		t.Fatalf("post to rooms/kitchen: %d", st)
	}
	for _, name := range f.order {
		f.waitFor(t, name, browserWait, m)
		f.tabs[name].waitUntil(t, browserWait, name+" no longer lists rooms/kitchen refused", `!feed.refused.has("rooms/kitchen")`)
	}
	t.Logf("the room streamed again %v after the backend came back; the backend was asked %d times", time.Since(upAt).Round(100*time.Millisecond), asked.Load())
}

// TestTabsHungLeaderChromium: the leader's tab is frozen (as Chromium
// freezes a background tab; a debugger pause or alert() is the same): it
// keeps the lock but relays nothing. The follower, hearing no heartbeat,
// takes the lead and resumes from its own position; when the frozen tab
// runs again it follows. Each tab gets each message once, in order.
func TestTabsHungLeaderChromium(t *testing.T) {
	br := tabsChromium(t)
	f := newTabsFaults(t, br, "")
	defer f.dump(t)
	a := f.open(t, "A", "lead", "rooms/hg")
	f.open(t, "B", "follow", "rooms/hg")
	m0 := f.post(t, "hg", "m0")
	f.waitFor(t, "B", browserWait, m0)
	lifecycle := func(state page.SetWebLifecycleStateState) {
		t.Helper()
		ctx, cancel := context.WithTimeout(a.(*browserPage).ctx, browserWait)
		defer cancel()
		if _, err := chromedp.Call(ctx, page.SetWebLifecycleState, page.SetWebLifecycleStateParams{State: state}); err != nil {
			t.Fatalf("set A's lifecycle %s: %v", state, err)
		}
	}
	lifecycle(page.SetWebLifecycleStateStateFrozen)
	frozen := time.Now()
	m1 := f.post(t, "hg", "while the leader is frozen")
	f.waitFor(t, "B", 3*browserWait, m1)
	t.Logf("the follower got the message %v after the leader froze", time.Since(frozen).Round(100*time.Millisecond))
	f.tabs["B"].waitUntil(t, browserWait, "B leads", `feed.role === "lead"`)
	lifecycle(page.SetWebLifecycleStateStateActive)
	thawed := time.Now()
	a.waitUntil(t, browserWait, "A follows again", `feed.role === "follow" && feed.state === "live"`)
	m2 := f.post(t, "hg", "after A came back")
	for _, name := range f.order {
		f.waitFor(t, name, browserWait, m2)
		if got, want := f.messages(t, name), ids(m0, m1, m2); !slices.Equal(got, want) {
			t.Errorf("%s received messages %v, want each of %v once, in order", name, got, want)
		}
	}
	// The tabs agree at once: no stream restarted over and over.
	var restarts int
	f.tabs["B"].eval(t, fmt.Sprintf(`esLog.filter((e) => e.created >= %d).length`, thawed.UnixMilli()), &restarts)
	if restarts > 3 {
		t.Errorf("the new leader opened %d streams after the old one came back, want at most 3", restarts)
	}
	deadline := time.Now().Add(browserWait)
	for scrape(t, f.base, "changecast_streams_open") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after the frozen leader came back: changecast_streams_open is %v, want 1", scrape(t, f.base, "changecast_streams_open"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tabsChromium is TestTabsChromium's tabsBrowser, without a crash.
func tabsChromium(t *testing.T) tabsBrowser {
	chrome := browserChromium(t)
	alloc := browserAllocator(t, chrome)
	var first *browserPage
	return tabsBrowser{
		open: func(tb testing.TB, name, url string) jsPage {
			tb.Helper()
			var p *browserPage
			if first == nil {
				p = newBrowserPage(t, alloc, name)
				first = p
			} else {
				p = newBrowserPage(t, first.ctx, name)
			}
			p.do(tb, "open "+url, chromedp.Navigate(url))
			return p
		},
		close: closeChromiumTab,
	}
}

// tabsFirefox is TestTabsFirefox's tabsBrowser.
func tabsFirefox(t *testing.T) tabsBrowser {
	b := startFirefox(t)
	n := 0
	return tabsBrowser{
		open: func(tb testing.TB, name, url string) jsPage {
			tb.Helper()
			p := newFirefoxTab(tb, b, name, n == 0)
			n++
			p.navigate(tb, url)
			return p
		},
		navigate: func(tb testing.TB, p jsPage, url string) {
			tb.Helper()
			p.(*firefoxTab).navigate(tb, url)
		},
		close: func(tb testing.TB, p jsPage) {
			tb.Helper()
			fp := p.(*firefoxTab)
			ctx, cancel := context.WithTimeout(tb.Context(), browserWait)
			defer cancel()
			if err := fp.tab.Close(ctx); err != nil {
				tb.Fatalf("%s: close: %v", fp.name, err)
			}
		},
	}
}

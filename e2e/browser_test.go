package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"changecast/store"
	"changecast/store/bolt"
)

// browserStepBound bounds how long a status change may take to show on the
// page after the PATCH that made it, so that a change that never arrives
// live fails the step; it is no speed assert, and is generous for a
// loaded 2-core machine running Chromium.
// The time actually taken is logged.
const browserStepBound = 5 * time.Second

// browserWait bounds waits that include a reconnect or a page load.
const browserWait = 20 * time.Second

// browserOtherMachineJS runs before a page's scripts: every order the
// page reads over REST or receives on its stream says that a placed order
// may move to preparing or delivered (not cancelled). The demo has no
// copy of the status machine, so it must offer those moves.
const browserOtherMachineJS = `(() => {
  const widen = (o) => {
    if (o && typeof o === "object" && o.status === "placed" && Array.isArray(o.allowed)) o.allowed = ["preparing", "delivered"];
  };
  const rewrite = (v) => {
    if (!v || typeof v !== "object") return;
    widen(v);
    widen(v.order);
    if (Array.isArray(v.orders)) v.orders.forEach(widen);
  };
  const fetch0 = window.fetch;
  window.fetch = async (input, init) => {
    const res = await fetch0(input, init);
    if (!res.ok || !String(input).startsWith("/api/orders")) return res;
    const body = await res.clone().json().catch(() => undefined);
    if (body === undefined) return res;
    rewrite(body);
    return new Response(JSON.stringify(body), { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  const ES = window.EventSource;
  window.EventSource = class extends ES {
    addEventListener(type, fn, opts) {
      if (type !== "snapshot" && type !== "order") return super.addEventListener(type, fn, opts);
      return super.addEventListener(type, (e) => {
        let d;
        try { d = JSON.parse(e.data); } catch { return fn(e); }
        rewrite(d);
        fn(new MessageEvent(e.type, { data: JSON.stringify(d), lastEventId: e.lastEventId }));
      }, opts);
    }
  };
})();`

// allowedMovesScenario opens, with open, a page that runs
// browserOtherMachineJS on a placed order's link (the server at base):
// the card offers exactly the rewritten moves (preparing, delivered; no
// cancel), the server's 409 shows on the card when the page tries
// delivered, and once the order is preparing the card offers the
// server's own moves. The demo keeps no copy of the status machine, so
// its buttons follow allowed wherever it comes from.
func allowedMovesScenario(t *testing.T, p jsPage, base string, open func(url string)) {
	t.Helper()
	var o store.Order
	browserREST(t, http.MethodPost, base+"/api/orders", `{"customer":"zoe","items":[{"sku":"pad-thai","qty":1}]}`, "", http.StatusCreated, &o)
	open(base + "/#order=" + o.ID)
	card := fmt.Sprintf(`#orders [data-order-id=%s]`, browserJS(o.ID))
	moves := fmt.Sprintf(`[...document.querySelectorAll(%s)].map(b => b.dataset.action + " " + b.dataset.next + " " + b.textContent).join(", ")`,
		browserJS(card+" button[data-next]"))
	p.waitUntil(t, browserWait, "the page is live", `document.getElementById("conn")?.dataset.state === "live"`)
	p.waitUntil(t, browserWait, "the placed order offers the rewritten moves",
		moves+` === "advance preparing Start preparing, advance delivered Mark delivered"`)
	var clicked bool
	p.eval(t, fmt.Sprintf(`(() => { const b = document.querySelector(%s); b?.click(); return Boolean(b); })()`,
		browserJS(card+` button[data-next="delivered"]:not(:disabled)`)), &clicked)
	if !clicked {
		t.Fatal("no enabled button moves the order to delivered")
	}
	p.waitUntil(t, browserWait, "the server's 409 shows on the card", fmt.Sprintf(
		`(document.querySelector(%s)?.textContent || "").includes("cannot move an order from placed to delivered")`, browserJS(card+" .form-error")))
	var status string
	p.eval(t, fmt.Sprintf(`document.querySelector(%s).dataset.status`, browserJS(card)), &status)
	if status != store.StatusPlaced {
		t.Errorf("after the refused move the card shows %q, want placed", status)
	}
	// The server's own moves, once the order is no longer placed.
	browserREST(t, http.MethodPatch, base+"/api/orders/"+o.ID, `{"status":"preparing"}`, "", http.StatusOK, nil)
	p.waitUntil(t, browserWait, "the preparing order offers the server's moves",
		moves+` === "advance out_for_delivery Send out, cancel cancelled Cancel"`)
}

// TestBrowserDemo drives the demo page in a real Chromium over the real
// server (run with -dev on a fixed port and data directory):
//   - the page loads with no console error; an order placed on it moves
//     through every status, each shown within browserStepBound of its PATCH;
//     another order is cancelled;
//   - a second browser context (its own storage) posts in the room and the
//     first page shows it, and the other way round;
//   - allowedMovesScenario: the moves a card offers are its order's
//     allowed (a page that rewrites allowed gets other buttons);
//   - the server is stopped, changes are written to its data directory while
//     it is down, a stand-in answers 503 (as a router does during a deploy),
//     then the server comes back on the same port and directory; changes
//     written right after it is back and after the page reconnects all show,
//     each exactly once, with no reset and no fresh snapshot.
//
// On failure it saves a full-page PNG of each page and logs the path.
// Set CHANGECAST_SCREENSHOTS=<dir> to save screenshots of a passing run too.
func TestBrowserDemo(t *testing.T) {
	chrome := browserChromium(t)
	port := freePort(t)
	dataDir := t.TempDir()
	srv := startBrowserServer(t, port, dataDir)
	t.Cleanup(func() { srv.stop(t) })

	allocCtx := browserAllocator(t, chrome)

	first := newBrowserPage(t, allocCtx, "desktop")
	second := newBrowserPage(t, first.ctx, "phone", chromedp.WithNewBrowserContext())
	pages := []*browserPage{first, second}
	// Cleanups run last-in first-out: this one runs before the browser ends.
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range pages {
				p.saveScreenshot(t, os.TempDir(), "failure")
			}
			t.Logf("server log:\n%s", srv.logs.String())
		}
	})

	var tracked store.Order // placed on the desktop page in the first case
	var cancelledID string  // the second order of the first case

	ok := t.Run("order lifecycle", func(t *testing.T) {
		first.setViewport(t, 1280, 800, false)
		first.open(t, srv.URL)
		first.checkLabels(t)
		// The server runs with -dev: the page says authentication is off.
		first.waitUntil(t, browserWait, "the dev-mode banner shows", `!document.getElementById("dev-banner").hidden`)
		first.clear(t, "#name")
		first.typeInto(t, "#name", "Alice")
		first.setValue(t, "#qty-pad-thai", "2")

		id := first.placeOrder(t)
		tracked = store.Order{ID: id}
		card := fmt.Sprintf(`#orders [data-order-id=%s]`, browserJS(id))
		first.waitUntil(t, browserWait, "the new order shows as placed",
			fmt.Sprintf(`document.querySelector(%s)?.dataset.status === "placed"`, browserJS(card)))
		first.waitUntil(t, browserWait, "the order's insert event is in the event log", first.logHasOrder(id, 1))

		for i, status := range []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered} {
			version := int64(i + 2)
			// The button is disabled while the previous PATCH is answered.
			first.waitUntil(t, browserWait, "the advance button is enabled",
				fmt.Sprintf(`document.querySelector(%s) !== null`, browserJS(card+` button[data-action="advance"]:not(:disabled)`)))
			first.click(t, card+` button[data-action="advance"]`)
			start := time.Now()
			first.waitUntil(t, browserStepBound, "order shows "+status+" after its PATCH", fmt.Sprintf(
				`(() => { const c = document.querySelector(%s); return c?.dataset.status === %s && c.dataset.version === %s &&
				   c.querySelector('.step[data-step=%s]')?.classList.contains("current"); })()`,
				browserJS(card), browserJS(status), browserJS(strconv.FormatInt(version, 10)), browserJS(status)))
			first.waitUntil(t, browserStepBound-time.Since(start), "the "+status+" event arrived over SSE", first.logHasOrder(id, version))
			t.Logf("%s shown and its event received %v after the click", status, time.Since(start).Round(time.Millisecond))
		}
		if got := first.evalString(t, card+" .badge", "textContent"); got != "Delivered" {
			t.Errorf("badge of a delivered order: got %q, want %q", got, "Delivered")
		}
		if n := first.evalInt(t, `document.querySelectorAll(`+browserJS(card+" button[data-action=advance], "+card+" button[data-action=cancel]")+`).length`); n != 0 {
			t.Errorf("a delivered order has %d advance or cancel buttons, want 0", n)
		}

		// A second order, cancelled.
		cancelled := first.placeOrder(t, id)
		cancelledID = cancelled
		card2 := fmt.Sprintf(`#orders [data-order-id=%s]`, browserJS(cancelled))
		first.waitUntil(t, browserWait, "the second order shows as placed",
			fmt.Sprintf(`document.querySelector(%s)?.dataset.status === "placed"`, browserJS(card2)))
		first.click(t, card2+` button[data-action="cancel"]`)
		start := time.Now()
		first.waitUntil(t, browserStepBound, "order shows cancelled after its PATCH",
			fmt.Sprintf(`document.querySelector(%s)?.dataset.status === "cancelled"`, browserJS(card2)))
		first.waitUntil(t, browserStepBound-time.Since(start), "the cancel event arrived over SSE", first.logHasOrder(cancelled, 2))

		// The event log shows each event's id, and plain words for an
		// event it did not apply.
		var bad []string
		first.eval(t, `[...document.querySelectorAll("#event-log li")].filter(l => l.querySelector(".log-id")?.textContent !== (l.dataset.id ? "id " + l.dataset.id : "no id") || /ignored|\(stale\)/.test(l.textContent)).map(l => l.textContent)`, &bad)
		if len(bad) > 0 {
			t.Errorf("event log entries without their id or with jargon: %q", bad)
		}
		first.checkNoProblems(t, true)
		first.screenshotIfAsked(t, "orders")
	})
	if !ok {
		return
	}

	ok = t.Run("second browser context chats", func(t *testing.T) {
		second.setViewport(t, 390, 844, true)
		second.open(t, srv.URL)
		second.checkLabels(t)
		// The second context has its own storage: no name, no orders.
		if got := second.evalString(t, "#name", "value"); got != "" {
			t.Errorf("name in a fresh browser context: got %q, want empty", got)
		}
		second.typeInto(t, "#name", "Bob")
		fromBob := `Hi from Bob <b>bold?</b> & "quotes"`
		second.typeInto(t, "#message-text", fromBob)
		second.click(t, "#send")
		second.waitUntil(t, browserWait, "Bob's message shows on his own page", second.messageCount(fromBob)+" === 1")
		first.waitUntil(t, browserWait, "Bob's message reaches the first page", first.messageCount(fromBob)+" === 1")
		if n := first.evalInt(t, `document.querySelectorAll("#messages b").length`); n != 0 {
			t.Errorf("message text was parsed as HTML: %d <b> elements in the chat", n)
		}

		// Alice sends with the keyboard: Enter submits the form.
		fromAlice := "Hello Bob, Alice here"
		first.typeInto(t, "#message-text", fromAlice+"\n")
		second.waitUntil(t, browserWait, "Alice's reply reaches the second page", second.messageCount(fromAlice)+" === 1")
		first.waitUntil(t, browserWait, "Alice's reply shows on her page", first.messageCount(fromAlice)+" === 1")

		for _, p := range pages {
			for _, text := range []string{fromBob, fromAlice} {
				if n := p.evalInt(t, p.messageCount(text)); n != 1 {
					t.Errorf("%s page shows %q %d times, want 1", p.name, text, n)
				}
			}
			p.checkNoProblems(t, true)
			p.checkFits(t)
		}
		second.screenshotIfAsked(t, "chat")
	})
	if !ok {
		return
	}

	ok = t.Run("a mistyped order shows Not found while chat stays live", func(t *testing.T) {
		unknown := "fedcba9876543210fedcba98"
		topic := "orders/" + unknown
		card := fmt.Sprintf(`#orders [data-order-id=%s]`, browserJS(unknown))
		first.typeInto(t, "#track-id", unknown+"\n")
		first.waitUntil(t, browserWait, "the card says Not found", fmt.Sprintf(
			`(() => { const c = document.querySelector(%s); return c?.dataset.status === "missing" && c.querySelector(".badge").textContent === "Not found"; })()`, browserJS(card)))
		first.waitUntil(t, browserWait, "the stream reports the order refused", fmt.Sprintf(
			`document.querySelector('#event-log li[data-event="refused"][data-topic=%s]') !== null`, browserJS(topic)))
		noticeAbout := fmt.Sprintf(`[...document.querySelectorAll("#notices .notice")].filter(n => n.textContent.includes(%s)).length`, browserJS(unknown))
		first.waitUntil(t, browserWait, "a notice names the order", noticeAbout+" === 1")
		if n := first.evalInt(t, `document.querySelectorAll('#event-log li[data-event="refused"][data-topic="rooms/lobby"]').length`); n != 0 {
			t.Errorf("the room was reported refused %d times; only the mistyped order is", n)
		}
		first.waitUntil(t, browserWait, "the page stays live", `document.getElementById("conn").dataset.state === "live"`)

		// Chat goes on both ways.
		fromBob := "Bob still chats beside a mistyped order"
		second.typeInto(t, "#message-text", fromBob)
		second.click(t, "#send")
		first.waitUntil(t, browserWait, "Bob's message reaches the page with the mistyped order", first.messageCount(fromBob)+" === 1")
		if first.evalString(t, "#send", "disabled ? 'disabled' : 'enabled'") != "enabled" {
			t.Errorf("Send is disabled beside a mistyped order; only a refused room disables it")
		}
		fromAlice := "Alice too"
		first.typeInto(t, "#message-text", fromAlice+"\n")
		second.waitUntil(t, browserWait, "Alice's message reaches the second page", second.messageCount(fromAlice)+" === 1")
		if n := first.evalInt(t, noticeAbout); n != 1 {
			t.Errorf("%d notices about the mistyped order after reconnects, want 1 (no duplicates stacking up)", n)
		}

		first.click(t, card+` button[data-action="untrack"]`)
		first.waitUntil(t, browserWait, "the notice about the order goes with its card", noticeAbout+" === 0")
		first.waitUntil(t, browserWait, "the page is live", `document.getElementById("conn").dataset.state === "live"`)
		first.checkNoProblems(t, false) // the REST read of the mistyped order is a 404
	})
	if !ok {
		return
	}

	ok = t.Run("a link /#order=<id> opens the page tracking it", func(t *testing.T) {
		card := fmt.Sprintf(`#orders [data-order-id=%s]`, browserJS(tracked.ID))
		link := first.evalString(t, card+" a.order-link", "href")
		if want := srv.URL + "/#order=" + tracked.ID; link != want {
			t.Errorf("order link: got %q, want %q", link, want)
		}
		if got := first.evalString(t, card+" .order-id", "textContent"); got != tracked.ID {
			t.Errorf("the card shows the id %q, want the whole id %q", got, tracked.ID)
		}
		first.evalString(t, card+` button[data-action="copy"]`, "textContent")

		// The second context tracks nothing; the link loads the page
		// tracking the order (a fresh load: it resumes from the id kept
		// in this tab, so the order comes over REST, the rest live).
		second.do(t, "leave the page", chromedp.Navigate("about:blank"))
		second.do(t, "open the link", chromedp.Navigate(link))
		other := fmt.Sprintf(`#orders [data-order-id=%s]`, browserJS(tracked.ID))
		second.waitUntil(t, browserWait, "the linked order shows as delivered",
			fmt.Sprintf(`document.querySelector(%s)?.dataset.status === "delivered"`, browserJS(other)))
		second.waitUntil(t, browserWait, "the page is live", `document.getElementById("conn").dataset.state === "live"`)
		// The order was read over REST on a fresh page, yet its timeline
		// shows every step's time: the order carries its history.
		second.waitUntil(t, browserWait, "every step of the linked order has its time",
			fmt.Sprintf(`["placed","preparing","out_for_delivery","delivered"].every(s => document.querySelector(%s + " .timeline [data-step=" + s + "] time")?.dateTime)`, browserJS(other)))
		// A link followed on the open page tracks that order too.
		second.eval(t, fmt.Sprintf(`(location.hash = %s, true)`, browserJS("#order="+cancelledID)), new(bool))
		second.waitUntil(t, browserWait, "the second linked order shows as cancelled",
			fmt.Sprintf(`document.querySelector(%s)?.dataset.status === "cancelled"`, browserJS(fmt.Sprintf(`#orders [data-order-id=%s]`, browserJS(cancelledID)))))
		second.waitUntil(t, browserWait, "the page is live", `document.getElementById("conn").dataset.state === "live"`)
		second.checkNoProblems(t, true)
	})
	if !ok {
		return
	}

	ok = t.Run("the moves offered are the order's allowed", func(t *testing.T) {
		p := newBrowserPage(t, first.ctx, "moves", chromedp.WithNewBrowserContext())
		t.Cleanup(func() {
			if t.Failed() {
				p.saveScreenshot(t, os.TempDir(), "failure")
			}
		})
		p.do(t, "rewrite allowed", func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: browserOtherMachineJS})
			return chromedp.Void{}, err
		})
		allowedMovesScenario(t, p, srv.URL, func(url string) { p.do(t, "open "+url, chromedp.Navigate(url)) })
		p.checkNoProblems(t, false) // the 409 is a failed request
	})
	if !ok {
		return
	}

	t.Run("server restart loses nothing and doubles nothing", func(t *testing.T) {
		// A fresh order to move while the server is away.
		id := first.placeOrder(t, tracked.ID)
		card := fmt.Sprintf(`#orders [data-order-id=%s]`, browserJS(id))
		first.waitUntil(t, browserWait, "the third order shows as placed",
			fmt.Sprintf(`document.querySelector(%s)?.dataset.status === "placed"`, browserJS(card)))
		for _, p := range pages {
			p.waitUntil(t, browserWait, "the page is live before the restart", `document.getElementById("conn").dataset.state === "live"`)
		}
		snapshotsBefore := map[*browserPage]int{}
		for _, p := range pages {
			snapshotsBefore[p] = p.evalInt(t, `document.querySelectorAll('#event-log li[data-event="snapshot"]').length`)
		}

		srv.stop(t)
		for _, p := range pages {
			p.waitUntil(t, browserWait, "the page notices the server is gone",
				`["reconnecting", "offline"].includes(document.getElementById("conn").dataset.state)`)
		}

		// Written while the server is down, straight into its data directory.
		var written []store.Message
		func() {
			b, err := bolt.Open(dataDir, bolt.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("open the data directory while the server is down: %v", err)
			}
			defer func() {
				if err := b.Close(); err != nil {
					t.Errorf("close store: %v", err)
				}
			}()
			ctx := t.Context()
			if _, err := b.UpdateOrderStatus(ctx, id, store.StatusPreparing, 1); err != nil {
				t.Fatalf("update order while down: %v", err)
			}
			m, err := b.PostMessage(ctx, "lobby", "carol", "written while the server was down")
			if err != nil {
				t.Fatalf("post while down: %v", err)
			}
			written = append(written, m)
		}()

		// A router answers 503 during the deploy: EventSource gives up for
		// good, and the page must recreate it itself.
		stub := startBrowserStub(t, port)
		first.waitUntil(t, browserWait, "the page sees the 503 and goes offline",
			`document.getElementById("conn").dataset.state === "offline"`)
		stub.stop(t)

		srv = startBrowserServer(t, port, dataDir)
		// Right after the restart, most likely before the pages reconnect.
		browserREST(t, http.MethodPatch, srv.URL+"/api/orders/"+id, `{"status":"out_for_delivery"}`, "2", http.StatusOK, nil)
		for i := 1; i <= 2; i++ {
			var m store.Message
			browserREST(t, http.MethodPost, srv.URL+"/api/rooms/lobby/messages",
				fmt.Sprintf(`{"author":"dave","text":"posted right after the restart #%d"}`, i), "", http.StatusCreated, &m)
			written = append(written, m)
		}
		t.Logf("connection state when the first writes after the restart were done: desktop %s, phone %s",
			first.evalString(t, "#conn", "dataset.state"), second.evalString(t, "#conn", "dataset.state"))

		for _, p := range pages {
			p.waitUntil(t, browserWait, "the page is live again", `document.getElementById("conn").dataset.state === "live"`)
		}
		browserREST(t, http.MethodPatch, srv.URL+"/api/orders/"+id, `{"status":"delivered"}`, "3", http.StatusOK, nil)
		var after store.Message
		browserREST(t, http.MethodPost, srv.URL+"/api/rooms/lobby/messages",
			`{"author":"erin","text":"posted after the pages reconnected"}`, "", http.StatusCreated, &after)
		written = append(written, after)

		first.waitUntil(t, browserWait, "the order reaches delivered",
			fmt.Sprintf(`document.querySelector(%s)?.dataset.status === "delivered"`, browserJS(card)))
		for v := int64(2); v <= 4; v++ {
			first.waitUntil(t, browserWait, fmt.Sprintf("order event v%d is in the log", v), first.logHasOrder(id, v))
		}
		for _, p := range pages {
			for _, m := range written {
				p.waitUntil(t, browserWait, fmt.Sprintf("%q shows", m.Text), p.messageCount(m.Text)+" >= 1")
			}
		}
		// A marker written after everything above: each page has one
		// stream for all its topics, delivered in log order, so once the
		// marker shows no earlier event (nor a doubled one) is still on
		// its way, and the counts below are final.
		var marker store.Message
		browserREST(t, http.MethodPost, srv.URL+"/api/rooms/lobby/messages",
			`{"author":"erin","text":"marker: everything before me has arrived"}`, "", http.StatusCreated, &marker)
		for _, p := range pages {
			p.waitUntil(t, browserWait, "the marker shows", p.messageCount(marker.Text)+" >= 1")
		}
		written = append(written, marker)

		for v := int64(1); v <= 4; v++ {
			if n := first.evalInt(t, first.orderEvents(id, v)); n != 1 {
				t.Errorf("desktop page received order %s v%d %d times, want 1", id, v, n)
			}
		}
		if got := first.evalString(t, card, "dataset.version"); got != "4" {
			t.Errorf("order version shown: got %s, want 4", got)
		}
		for _, p := range pages {
			for _, m := range written {
				if n := p.evalInt(t, p.messageCount(m.Text)); n != 1 {
					t.Errorf("%s page shows %q %d times, want 1", p.name, m.Text, n)
				}
				if n := p.evalInt(t, fmt.Sprintf(`document.querySelectorAll('#event-log li[data-event="message"][data-detail=%s]').length`, browserJS(browserCSS(m.ID)))); n != 1 {
					t.Errorf("%s page received message %s (%q) %d times, want 1", p.name, m.ID, m.Text, n)
				}
			}
			if n := p.evalInt(t, `document.querySelectorAll('#event-log li[data-event="reset"]').length`); n != 0 {
				t.Errorf("%s page got %d reset events after a restart on the same data directory, want 0", p.name, n)
			}
			if n := p.evalInt(t, `document.querySelectorAll('#event-log li[data-event="snapshot"]').length`); n != snapshotsBefore[p] {
				t.Errorf("%s page got %d snapshots, %d before the restart: a resumed stream sends none", p.name, n, snapshotsBefore[p])
			}
			if n := p.evalInt(t, `document.querySelectorAll('#event-log li[data-note="duplicate event"]').length`); n != 0 {
				t.Errorf("%s page received %d events twice", p.name, n)
			}
			shown := p.evalInt(t, `Number(document.getElementById("event-count").textContent)`)
			logged := p.evalInt(t, `document.querySelectorAll("#event-log li").length`)
			if shown != logged {
				t.Errorf("%s page shows %d events received but logged %d", p.name, shown, logged)
			}
			p.checkNoProblems(t, false)
		}
		first.screenshotIfAsked(t, "after-restart")
		second.screenshotIfAsked(t, "after-restart")
	})
}

// browserAllocator starts a headless Chromium for the test's lifetime.
func browserAllocator(tb testing.TB, chrome string) context.Context {
	tb.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		// Two tabs run at once: neither may have its timers throttled.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	tb.Cleanup(cancelAlloc)
	return allocCtx
}

// browserChromium returns the Chromium to use. It skips the test when there
// is none, except under CI=true, where the test must run.
func browserChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("Chromium is not installed, and CI=true: the browser test must run in CI (apt-get install chromium)")
	}
	t.Skip("Chromium is not installed (apt-get install chromium); skipping the browser test")
	return ""
}

// browserServer is the binary run with -dev on a given port.
type browserServer struct {
	*e2eServer
	once sync.Once
}

// startBrowserServer runs the server on port and dataDir and waits until it
// listens.
func startBrowserServer(tb testing.TB, port int, dataDir string) *browserServer {
	tb.Helper()
	env := map[string]string{"PORT": strconv.Itoa(port), "DATA_DIR": dataDir, "HEARTBEAT_INTERVAL": "5s", "SHUTDOWN_TIMEOUT": "5s"}
	s := &browserServer{e2eServer: newE2EServer(tb, env)}
	if want := fmt.Sprintf("http://127.0.0.1:%d", port); s.URL != want {
		tb.Errorf("server listens on %s, want %s", s.URL, want)
	}
	return s
}

// stop sends SIGTERM and waits for the server to exit; it may be called
// more than once.
func (s *browserServer) stop(tb testing.TB) {
	tb.Helper()
	s.once.Do(func() { s.Stop(tb) })
}

// browserStub answers every request with 503, as a router does while no
// instance is up.
type browserStub struct {
	srv  *http.Server
	done chan error
}

func startBrowserStub(tb testing.TB, port int) *browserStub {
	tb.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		tb.Fatalf("listen for the 503 stand-in: %v", err)
	}
	s := &browserStub{
		srv: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "no instance available", http.StatusServiceUnavailable)
		})},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s
}

func (s *browserStub) stop(tb testing.TB) {
	tb.Helper()
	if err := s.srv.Close(); err != nil {
		tb.Errorf("close the 503 stand-in: %v", err)
	}
	if err := <-s.done; !errors.Is(err, http.ErrServerClosed) {
		tb.Errorf("503 stand-in: %v", err)
	}
}

// browserREST sends a JSON request (If-Match when ifMatch is set), checks
// the status and decodes the answer into out (nil to skip).
func browserREST(tb testing.TB, method, url, body, ifMatch string, want int, out any) {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read: %v", method, url, err)
	}
	if resp.StatusCode != want {
		tb.Fatalf("%s %s: got status %d, want %d: %s", method, url, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			tb.Fatalf("%s %s: decode %s: %v", method, url, b, err)
		}
	}
}

// browserPage is one tab, with what its console reported.
type browserPage struct {
	name string
	ctx  context.Context

	mu       sync.Mutex
	problems []string // console errors, exceptions, browser log errors
	network  []string // failed requests, as the browser logs them
}

func newBrowserPage(tb testing.TB, parent context.Context, name string, opts ...chromedp.ContextOption) *browserPage {
	tb.Helper()
	p := &browserPage{name: name}
	ctx, cancel := chromedp.NewContext(parent, append(opts, chromedp.WithListener(p.listen))...)
	tb.Cleanup(cancel)
	p.ctx = ctx
	// The first run opens the tab (and the browser) for the life of ctx: it
	// must not run under a shorter context.
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("open a tab in Chromium: %v", err)
	}
	return p
}

// listen runs in the tab's event loop: it only records.
func (p *browserPage) listen(ev any) {
	var problem, network string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			problem = "console." + string(ev.Type) + ": " + strings.Join(parts, " ")
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			text += " " + d.Exception.Description
		}
		problem = fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, text)
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError {
			if ev.Entry.Source == log.EntrySourceNetwork {
				network = ev.Entry.Text + " " + ev.Entry.URL
			} else {
				problem = fmt.Sprintf("browser log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		}
	}
	if problem == "" && network == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if problem != "" {
		p.problems = append(p.problems, problem)
	}
	if network != "" {
		p.network = append(p.network, network)
	}
}

// checkNoProblems fails on any console error or exception, and, when
// noNetwork is set, on any failed request too.
func (p *browserPage) checkNoProblems(tb testing.TB, noNetwork bool) {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.problems {
		tb.Errorf("%s page: %s", p.name, s)
	}
	p.problems = nil
	if noNetwork {
		for _, s := range p.network {
			tb.Errorf("%s page: failed request: %s", p.name, s)
		}
	} else if len(p.network) > 0 {
		tb.Logf("%s page: failed requests while the server was away (expected): %d, first %s", p.name, len(p.network), p.network[0])
	}
	p.network = nil
}

func (p *browserPage) do(tb testing.TB, what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.Fatalf("%s page: %s: %v\n%s", p.name, what, err, p.describe())
	}
}

func (p *browserPage) setViewport(tb testing.TB, w, h int64, mobile bool) {
	tb.Helper()
	if mobile {
		p.do(tb, "set a phone viewport", chromedp.EmulateViewport(w, h, chromedp.EmulateScale(3), chromedp.EmulateMobile, chromedp.EmulateTouch))
		return
	}
	p.do(tb, "set a desktop viewport", chromedp.EmulateViewport(w, h))
}

// open loads the page and waits until its stream is live.
func (p *browserPage) open(tb testing.TB, url string) {
	tb.Helper()
	p.do(tb, "navigate", chromedp.Navigate(url+"/"))
	p.waitUntil(tb, browserWait, "the page connects", `document.getElementById("conn")?.dataset.state === "live"`)
	p.waitUntil(tb, browserWait, "the room snapshot arrives", `document.querySelector('#event-log li[data-event="snapshot"][data-topic="rooms/lobby"]') !== null`)
}

func (p *browserPage) click(tb testing.TB, sel string) {
	tb.Helper()
	p.do(tb, "click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

func (p *browserPage) typeInto(tb testing.TB, sel, text string) {
	tb.Helper()
	p.do(tb, "type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// clear empties an input's value (the property, which typing changed).
func (p *browserPage) clear(tb testing.TB, sel string) {
	tb.Helper()
	var ok bool
	p.eval(tb, fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) return false; e.value = ""; return true; })()`, browserJS(sel)), &ok)
	if !ok {
		tb.Fatalf("%s page: clear %s: no such element", p.name, sel)
	}
}

func (p *browserPage) setValue(tb testing.TB, sel, v string) {
	tb.Helper()
	p.do(tb, "set "+sel, chromedp.SetValue(chromedp.CSS(sel), v))
}

// placeOrder clicks "Place order" and returns the id of the new card: the
// first one whose id is not in known.
func (p *browserPage) placeOrder(tb testing.TB, known ...string) string {
	tb.Helper()
	before := p.evalInt(tb, `document.querySelectorAll("#orders [data-order-id]").length`)
	p.click(tb, "#place-order")
	p.waitUntil(tb, browserWait, "a new order card appears",
		fmt.Sprintf(`document.querySelectorAll("#orders [data-order-id]").length > %d`, before))
	id := p.evalString(tb, "#orders [data-order-id]", "dataset.orderId")
	if !store.ValidOrderID(id) {
		tb.Fatalf("new order card has id %q", id)
	}
	for _, k := range known {
		if id == k {
			tb.Fatalf("the newest card is the old order %s", id)
		}
	}
	return id
}

// checkFits fails if the page scrolls sideways at its viewport width.
func (p *browserPage) checkFits(tb testing.TB) {
	tb.Helper()
	var got struct{ Scroll, Viewport int }
	p.eval(tb, `({scroll: document.documentElement.scrollWidth, viewport: document.documentElement.clientWidth})`, &got)
	if got.Scroll > got.Viewport {
		tb.Errorf("%s page is %dpx wide in a %dpx viewport: it scrolls sideways", p.name, got.Scroll, got.Viewport)
	}
}

// checkLabels fails if a form control has no label or a button no name.
func (p *browserPage) checkLabels(tb testing.TB) {
	tb.Helper()
	var unlabelled []string
	p.eval(tb, `[...document.querySelectorAll("input, select, textarea")].filter(e => e.labels.length === 0 && !e.getAttribute("aria-label")).map(e => e.id || e.name)`, &unlabelled)
	if len(unlabelled) > 0 {
		tb.Errorf("%s page: controls without a label: %v", p.name, unlabelled)
	}
	var nameless int
	p.eval(tb, `[...document.querySelectorAll("button")].filter(b => !(b.getAttribute("aria-label") || b.textContent.trim())).length`, &nameless)
	if nameless > 0 {
		tb.Errorf("%s page: %d buttons without a name", p.name, nameless)
	}
	var inline []string
	p.eval(tb, `[...document.querySelectorAll("*")].flatMap(e => [...e.attributes].filter(a => a.name.startsWith("on")).map(a => e.tagName + " " + a.name))`, &inline)
	if len(inline) > 0 {
		tb.Errorf("%s page: inline event handlers: %v", p.name, inline)
	}
}

func (p *browserPage) eval(tb testing.TB, expr string, out any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		tb.Fatalf("%s page: evaluate %s: %v", p.name, expr, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		tb.Fatalf("%s page: evaluate %s: decode %s: %v", p.name, expr, raw, err)
	}
}

func (p *browserPage) evalInt(tb testing.TB, expr string) int {
	tb.Helper()
	var n int
	p.eval(tb, expr, &n)
	return n
}

// evalString reads a property (a dotted path) of the first element sel matches.
func (p *browserPage) evalString(tb testing.TB, sel, prop string) string {
	tb.Helper()
	var s *string
	p.eval(tb, fmt.Sprintf(`document.querySelector(%s)?.%s ?? null`, browserJS(sel), prop), &s)
	if s == nil {
		tb.Fatalf("%s page: no %s.%s\n%s", p.name, sel, prop, p.describe())
	}
	return *s
}

// waitUntil polls the JavaScript expression cond until it is true, failing
// the test after timeout.
func (p *browserPage) waitUntil(tb testing.TB, timeout time.Duration, what, cond string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, browserWait)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		cancel()
		if err != nil {
			tb.Fatalf("%s page: wait until %s: %v", p.name, what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s page: %s: not within %v\n%s", p.name, what, timeout, p.describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// describe summarises the page's state for a failure message.
func (p *browserPage) describe() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		conn: document.getElementById("conn")?.textContent.trim().replace(/\s+/g, " "),
		events: document.getElementById("event-count")?.textContent,
		notices: [...document.querySelectorAll("#notices p")].map(n => n.textContent),
		orders: [...document.querySelectorAll("#orders [data-order-id]")].map(o => o.dataset.orderId + " " + o.dataset.status + " v" + o.dataset.version),
		messages: [...document.querySelectorAll("#messages .msg-text")].map(m => m.textContent).slice(-10),
		log: [...document.querySelectorAll("#event-log li")].slice(0, 15).map(l => [l.dataset.event, l.dataset.topic, l.dataset.detail, l.dataset.note || ""].join(" ")),
	}, null, 1)`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return "page state: " + s
}

// messageCount is an expression counting chat messages whose text is text.
func (p *browserPage) messageCount(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll("#messages .msg-text")].filter(n => n.textContent === %s).length`, browserJS(text))
}

// orderEvents is an expression counting the order events of version v of
// order id in the page's event log.
func (p *browserPage) orderEvents(id string, v int64) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#event-log li[data-event="order"]')].filter(l => l.dataset.topic === %s && l.dataset.detail.startsWith(%s)).length`,
		browserJS("orders/"+id), browserJS(fmt.Sprintf("v%d ", v)))
}

func (p *browserPage) logHasOrder(id string, v int64) string {
	return p.orderEvents(id, v) + " >= 1"
}

// saveScreenshot writes a full-page PNG into dir and logs its path.
func (p *browserPage) saveScreenshot(tb testing.TB, dir, label string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.Logf("%s page: no screenshot: %v", p.name, err)
		return
	}
	path := filepath.Join(dir, fmt.Sprintf("changecast-browser-%s-%s-%d.png", label, p.name, time.Now().UnixNano()))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.Logf("%s page: save screenshot: %v", p.name, err)
		return
	}
	tb.Logf("%s page: screenshot saved to %s", p.name, path)
}

// screenshotIfAsked saves a screenshot when CHANGECAST_SCREENSHOTS names a
// directory.
func (p *browserPage) screenshotIfAsked(tb testing.TB, label string) {
	tb.Helper()
	if dir := os.Getenv("CHANGECAST_SCREENSHOTS"); dir != "" {
		p.saveScreenshot(tb, dir, label)
	}
}

// browserJS quotes s as a JavaScript string literal.
func browserJS(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// browserCSS returns s unchanged if it is safe inside a quoted CSS
// attribute value; ids are hex, so anything else is a test bug.
func browserCSS(s string) string {
	if strings.ContainsAny(s, `"\`) {
		panic("unsafe CSS attribute value " + s)
	}
	return s
}

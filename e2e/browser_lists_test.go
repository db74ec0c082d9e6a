package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"changecast/store"
)

// presenceWait bounds a presence change: a leave comes 5 s after the last
// stream closed (docs/api.md, Presence); the bound is generous for a loaded
// 2-core machine.
const presenceWait = 45 * time.Second

// countStreamOpens makes the page count every EventSource connection that
// opens (a new EventSource or the browser's own reconnect) in
// window.__streamOpens, from the next page load on: a list that shows a
// new order while the count stays put got it without reconnecting.
// window.__lastStream is the newest EventSource.
func countStreamOpens(tb testing.TB, p *browserPage) {
	tb.Helper()
	src := `window.__streamOpens = 0;
(() => {
  const ES = window.EventSource;
  window.EventSource = class extends ES {
    constructor(...args) {
      super(...args);
      window.__lastStream = this;
      this.addEventListener("open", () => { window.__streamOpens++; });
    }
  };
})();`
	p.do(tb, "count stream opens", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: src})
		return err
	}))
}

// TestBrowserLists drives the demo's live lists and chat presence in a real
// Chromium over the real server (-dev):
//   - the kitchen board (staff) shows an order another client places over
//     REST without the page reconnecting, moves it along with its buttons,
//     shows a change made elsewhere, and drops it once delivered (and
//     another once cancelled);
//   - "my orders" of a second browser context shows that customer's new
//     order and its status changes live, and never another customer's;
//   - presence: both contexts, named in the chat's room, list each other;
//     when the second page closes, the first lists it no longer once the
//     grace period is over.
func TestBrowserLists(t *testing.T) {
	chrome := browserChromium(t)
	srv := startBrowserServer(t, freePort(t), t.TempDir())
	t.Cleanup(func() { srv.stop(t) })
	allocCtx := browserAllocator(t, chrome)

	staff := newBrowserPage(t, allocCtx, "staff")
	// The second context's cancel closes its page (the presence case).
	customer := &browserPage{name: "customer"}
	secondCtx, closeSecond := chromedp.NewContext(staff.ctx, chromedp.WithNewBrowserContext(), chromedp.WithListener(customer.listen))
	t.Cleanup(closeSecond)
	customer.ctx = secondCtx
	if err := chromedp.Do(secondCtx); err != nil {
		t.Fatalf("open a second browser context: %v", err)
	}
	pages := []*browserPage{staff, customer}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range pages {
				if p.ctx.Err() == nil {
					p.saveScreenshot(t, os.TempDir(), "failure")
				}
			}
			t.Logf("server log:\n%s", srv.logs.String())
		}
	})

	opens := func(p *browserPage) int { return p.evalInt(t, `window.__streamOpens`) }
	// streamOpenWith is true once the page's newest EventSource is open
	// with all of params in its URL.
	streamOpenWith := func(params ...string) string {
		return fmt.Sprintf(`(() => { const s = window.__lastStream; if (!s || s.readyState !== EventSource.OPEN) return false;
			const q = new URL(s.url).searchParams; return %s.every(([k, v]) => q.getAll(k).includes(v)); })()`, mustJSONPairs(params))
	}
	row := func(list, id string) string { return fmt.Sprintf(`#%s [data-order-id=%s]`, list, browserJS(id)) }
	rowIs := func(list, id, status string, version int64) string {
		return fmt.Sprintf(`(() => { const r = document.querySelector(%s); return r?.dataset.status === %s && r.dataset.version === %s; })()`,
			browserJS(row(list, id)), browserJS(status), browserJS(fmt.Sprint(version)))
	}
	gone := func(list, id string) string {
		return fmt.Sprintf(`document.querySelector(%s) === null`, browserJS(row(list, id)))
	}
	place := func(customer string) store.Order {
		var o store.Order
		browserREST(t, "POST", srv.URL+"/api/orders", fmt.Sprintf(`{"customer":%q,"items":[{"sku":"lemonade","qty":1}]}`, customer), "", 201, &o)
		return o
	}
	patch := func(o store.Order, status string) store.Order {
		var out store.Order
		browserREST(t, "PATCH", srv.URL+"/api/orders/"+o.ID, fmt.Sprintf(`{"status":%q}`, status), fmt.Sprint(o.Version), 200, &out)
		return out
	}

	ok := t.Run("kitchen board", func(t *testing.T) {
		countStreamOpens(t, staff)
		staff.open(t, srv.URL)
		staff.checkLabels(t)
		staff.typeInto(t, "#name", "Kay")
		staff.click(t, "#board-on")
		// The stream resumes with the board's topic (no snapshot: the page
		// reads the active orders over REST) and names Kay.
		staff.waitUntil(t, browserWait, "the stream is open on orders as Kay", streamOpenWith("topic", "orders", "topic", "rooms/lobby", "user", "Kay"))
		staff.waitUntil(t, browserWait, "the board says it is empty", `!document.getElementById("board-empty").hidden`)
		before := opens(staff)

		o := place("Zed")
		staff.waitUntil(t, browserWait, "an order placed by another client shows on the board", rowIs("board", o.ID, store.StatusPlaced, 1))
		staff.waitUntil(t, browserWait, "its insert event is in the log", staff.logHasOrder(o.ID, 1))
		if n := opens(staff); n != before {
			t.Errorf("the page opened %d streams to show the new order, want none", n-before)
		}

		// The board's own buttons move it along.
		for i, status := range []string{store.StatusPreparing, store.StatusOutForDelivery} {
			version := int64(i + 2)
			staff.waitUntil(t, browserWait, "the advance button is enabled",
				fmt.Sprintf(`document.querySelector(%s) !== null`, browserJS(row("board", o.ID)+` button[data-action="advance"]:not(:disabled)`)))
			staff.click(t, row("board", o.ID)+` button[data-action="advance"]`)
			staff.waitUntil(t, browserWait, "the board shows "+status, rowIs("board", o.ID, status, version))
			staff.waitUntil(t, browserWait, "the "+status+" event arrived", staff.logHasOrder(o.ID, version))
			o.Version, o.Status = version, status
		}
		// Delivered by another client: the board learns it over the stream
		// alone, and drops the order.
		o = patch(o, store.StatusDelivered)
		staff.waitUntil(t, browserWait, "the delivered event arrived", staff.logHasOrder(o.ID, o.Version))
		staff.waitUntil(t, browserWait, "a delivered order leaves the board", gone("board", o.ID))

		// A cancelled one leaves too; an active one stays.
		c := place("Zed")
		a := place("Ann")
		staff.waitUntil(t, browserWait, "two more orders show", rowIs("board", c.ID, store.StatusPlaced, 1)+" && "+rowIs("board", a.ID, store.StatusPlaced, 1))
		patch(c, store.StatusCancelled)
		staff.waitUntil(t, browserWait, "a cancelled order leaves the board", gone("board", c.ID))
		staff.waitUntil(t, browserWait, "the other stays, alone", rowIs("board", a.ID, store.StatusPlaced, 1)+` && document.querySelectorAll("#board [data-order-id]").length === 1`)
		if n := opens(staff); n != before {
			t.Errorf("the page opened %d streams while the board changed, want none", n-before)
		}
		if n := staff.evalInt(t, `document.querySelectorAll('#event-log li[data-note="duplicate event"]').length`); n != 0 {
			t.Errorf("%d events were received twice", n)
		}
		staff.checkNoProblems(t, true)
		staff.screenshotIfAsked(t, "board")
	})
	if !ok {
		return
	}

	ok = t.Run("my orders", func(t *testing.T) {
		countStreamOpens(t, customer)
		customer.setViewport(t, 390, 844, true)
		customer.open(t, srv.URL)
		customer.typeInto(t, "#name", "Mia")
		customer.click(t, "#mine-on")
		customer.waitUntil(t, browserWait, "the stream is open on Mia's orders as Mia", streamOpenWith("topic", "customers/Mia", "user", "Mia"))
		before := opens(customer)

		other := place("Ned")
		mine := place("Mia")
		customer.waitUntil(t, browserWait, "Mia's new order shows in my orders", rowIs("mine", mine.ID, store.StatusPlaced, 1))
		mine = patch(mine, store.StatusPreparing)
		customer.waitUntil(t, browserWait, "its status change shows", rowIs("mine", mine.ID, store.StatusPreparing, 2))
		if n := opens(customer); n != before {
			t.Errorf("the page opened %d streams to show the new order, want none", n-before)
		}
		if n := customer.evalInt(t, `document.querySelectorAll("#mine [data-order-id]").length`); n != 1 {
			t.Errorf("my orders lists %d orders, want Mia's 1", n)
		}
		if n := customer.evalInt(t, fmt.Sprintf(`document.querySelectorAll('#event-log li[data-topic=%s]').length`, browserJS("orders/"+other.ID))); n != 0 {
			t.Errorf("Mia's page received %d events of Ned's order", n)
		}
		// The page shows the board only to staff: in -dev everyone is.
		customer.checkNoProblems(t, true)
		customer.checkFits(t)
		customer.screenshotIfAsked(t, "mine")
	})
	if !ok {
		return
	}

	t.Run("presence in chat", func(t *testing.T) {
		listed := func(user string) string {
			return fmt.Sprintf(`document.querySelector(%s) !== null`, browserJS(fmt.Sprintf(`#presence [data-user=%s]`, browserJS(user))))
		}
		// Both named themselves in the lobby (the page passes the name as
		// the stream's user): each lists the other and itself.
		for _, p := range pages {
			for _, u := range []string{"Kay", "Mia"} {
				p.waitUntil(t, presenceWait, p.name+" lists "+u, listed(u))
			}
		}
		if got := staff.evalString(t, `#presence [data-user="Kay"]`, "textContent"); got != "Kay (you)" {
			t.Errorf("the staff page lists itself as %q, want %q", got, "Kay (you)")
		}
		staff.waitUntil(t, browserWait, "a join event is in the log",
			`document.querySelector('#event-log li[data-event="presence"][data-detail="join Mia"]') !== null`)

		// The second page closes: after the grace period Mia leaves.
		closeSecond()
		start := time.Now()
		staff.waitUntil(t, presenceWait, "Mia leaves once her page is closed", "!("+listed("Mia")+")")
		t.Logf("Mia left %v after her page closed", time.Since(start).Round(time.Millisecond))
		staff.waitUntil(t, browserWait, "the leave event is in the log",
			`document.querySelector('#event-log li[data-event="presence"][data-detail="leave Mia"]') !== null`)
		if !staff.evalBool(t, listed("Kay")) {
			t.Errorf("the staff page no longer lists itself")
		}
		staff.checkNoProblems(t, true)
		staff.screenshotIfAsked(t, "presence")
	})
}

// mustJSONPairs encodes key, value, key, value… as a JSON array of pairs.
func mustJSONPairs(kv []string) string {
	var b strings.Builder
	b.WriteString("[")
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "[%s,%s]", browserJS(kv[i]), browserJS(kv[i+1]))
	}
	b.WriteString("]")
	return b.String()
}

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"changecast/store"
)

// The README's Browser client snippets are run as written, with only the
// substitutions the README documents:
//   - plain JavaScript: `<order-id>` becomes a real order's id (and, as
//     pasted, it stays: that topic is refused while the room streams). The
//     page sits on changecast's origin: a reverse proxy serves it and
//     passes every other path to changecast, as one origin in front of
//     both would.
//   - React: no CDN or React here, so `react` is an import map entry for
//     a small stand-in (reactShim: useState, useEffect, createElement and
//     a render that batches updates on a microtask, as React does), and
//     the one JSX element is compiled as a JSX compiler does
//     (`<p>{x}</p>` → `createElement("p", null, x)`). The placeholder
//     server `https://changecast.example.com` becomes changecast's origin,
//     with the page's origin in CORS_ORIGINS; `./changecast.js` is the
//     server's module, as the comment says.

// readmeSnippets returns the plain-JavaScript (HTML) and React (JSX)
// snippets of the README's Browser client section.
func readmeSnippets(t *testing.T) (plain, jsx string) {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n## Browser client\n")
	if i < 0 {
		t.Fatal("README.md has no Browser client section")
	}
	s = s[i+1:]
	if j := strings.Index(s[3:], "\n## "); j >= 0 {
		s = s[:j+3]
	}
	block := func(lang string) string {
		m := regexp.MustCompile("(?s)```"+lang+"\n(.*?)```").FindAllStringSubmatch(s, -1)
		if len(m) != 1 {
			t.Fatalf("README's Browser client section has %d %s snippets, want 1", len(m), lang)
		}
		return m[0][1]
	}
	return block("html"), block("jsx")
}

// snippetHead records, before the snippet runs, what a person would see:
// every document title (window.titles) and every console.warn
// (window.warned).
const snippetHead = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>page</title>
<script>
window.titles = [];
new MutationObserver((records) => {
  for (const r of records) for (const n of r.addedNodes) titles.push(n.data);
}).observe(document.querySelector("title"), { childList: true });
window.warned = [];
const warn = console.warn;
console.warn = (...args) => { warned.push(args); warn.apply(console, args); };
</script></head><body>
`

// reactShim stands in for React in the React snippet's page.
const reactShim = `// A stand-in for the React APIs the README's snippet uses.
let current = null; // the component being rendered
const roots = new Map();
export function createElement(type, props, ...children) {
  return { type, props: props || {}, children };
}
export function useState(initial) {
  const c = current, i = c.i++;
  if (!(i in c.hooks)) c.hooks[i] = { value: initial };
  const h = c.hooks[i];
  return [h.value, (v) => {
    h.value = typeof v === "function" ? v(h.value) : v;
    if (c.pending) return;
    c.pending = true;
    queueMicrotask(() => { c.pending = false; if (c.mounted) draw(c); });
  }];
}
export function useEffect(fn, deps) {
  const c = current, i = c.i++;
  const h = c.hooks[i];
  if (h && deps && deps.length === h.deps.length && deps.every((d, k) => Object.is(d, h.deps[k]))) return;
  c.effects.push(() => {
    h?.cleanup?.();
    c.hooks[i] = { deps, cleanup: fn() };
  });
}
function draw(c) {
  current = c;
  c.i = 0;
  c.effects = [];
  const el = c.Component(c.props);
  current = null;
  const node = document.createElement(el.type);
  node.textContent = el.children.join("");
  c.container.replaceChildren(node);
  for (const e of c.effects) e();
}
export function render(Component, props, container) {
  let c = roots.get(container);
  if (!c) {
    c = { Component, container, hooks: [], mounted: true };
    roots.set(container, c);
  }
  c.props = props;
  draw(c);
}
`

// reactPage mounts the React snippet's OrderStatus: window.show(orderId)
// renders it (again) with that id; window.shown lists each text it shows.
const reactPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>react</title>
<script type="importmap">{"imports": {"react": "/react-shim.js"}}</script>
</head><body><div id="root"></div>
<script type="module">
import { render } from "react";
import { OrderStatus } from "/OrderStatus.js";
const root = document.getElementById("root");
window.shown = [];
new MutationObserver(() => {
  const t = root.querySelector("p")?.textContent;
  if (t !== undefined && t !== shown.at(-1)) shown.push(t);
}).observe(root, { childList: true, subtree: true, characterData: true });
window.show = (orderId) => render(OrderStatus, { orderId, token: "" }, root);
</script></body></html>`

// snippetSetup runs changecast and the pages of the snippets in front of
// it, with one order placed; it returns the pages' origin, changecast's
// and the order's id.
func snippetSetup(t *testing.T) (pages, base, orderID string) {
	t.Helper()
	plain, jsx := readmeSnippets(t)
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	base = fmt.Sprintf("http://127.0.0.1:%d", port)
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)

	// The one JSX element, compiled.
	el := regexp.MustCompile(`<(\w+)>\{(.*)\}</(\w+)>`)
	if m := el.FindAllStringSubmatch(jsx, -1); len(m) != 1 || m[0][1] != m[0][3] {
		t.Fatalf("the React snippet has %d JSX elements of the form <p>{...}</p>, want 1: update the test's compiler", len(m))
	}
	module := "import { createElement } from \"react\";\n" + el.ReplaceAllString(jsx, `createElement("$1", null, $2)`)
	if strings.Contains(module, "</") {
		t.Fatalf("the React snippet has JSX the test does not compile:\n%s", module)
	}
	if !strings.Contains(module, "https://changecast.example.com") {
		t.Fatal("the React snippet no longer names https://changecast.example.com: update the test's substitution")
	}
	module = strings.ReplaceAll(module, "https://changecast.example.com", base)

	var placed atomic.Pointer[string] // the order's id, set before any page loads
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page := func(ctype, body string) {
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("Cache-Control", "no-store")
			io.WriteString(w, body)
		}
		switch r.URL.Path {
		case "/plain":
			page("text/html; charset=utf-8", snippetHead+strings.ReplaceAll(plain, "<order-id>", *placed.Load())+"</body></html>")
		case "/as-pasted":
			page("text/html; charset=utf-8", snippetHead+plain+"</body></html>")
		case "/react":
			page("text/html; charset=utf-8", reactPage)
		case "/react-shim.js":
			page("text/javascript", reactShim)
		case "/OrderStatus.js":
			page("text/javascript", module)
		default:
			proxy.ServeHTTP(w, r) // changecast, on this origin
		}
	}))
	t.Cleanup(srv.Close)
	logs := &lockedBuffer{}
	startClientBinary(t, t, bin, port, t.TempDir(), logs, "CORS_ORIGINS="+srv.URL)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	var o store.Order
	browserREST(t, http.MethodPost, base+"/api/orders", `{"customer":"alice","items":[{"sku":"pizza","qty":1}]}`, "", http.StatusCreated, &o)
	placed.Store(&o.ID)
	return srv.URL, base, o.ID
}

// snippetScenario runs the snippets in one engine: open loads a URL in
// the tab p.
func snippetScenario(t *testing.T, p jsPage, open func(url string)) {
	pages, base, id := snippetSetup(t)
	post := func(text string) {
		browserREST(t, http.MethodPost, base+"/api/rooms/lobby/messages",
			fmt.Sprintf(`{"author":"tester","text":%s}`, browserJS(text)), "", http.StatusCreated, nil)
	}
	chatHas := func(text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#chat li")].some(li => li.textContent === %s)`, browserJS("tester: "+text))
	}

	t.Run("plain JavaScript", func(t *testing.T) {
		open(pages + "/plain")
		p.waitUntil(t, browserWait, "the title says live", `document.title === "live"`)
		var titles []string
		p.eval(t, `titles`, &titles)
		if len(titles) == 0 || titles[0] != "connecting" {
			t.Errorf("titles %q: want connecting first (the first status must reach the snippet's listener)", titles)
		}
		post("hello from the plain snippet")
		p.waitUntil(t, browserWait, "the message is in the list", chatHas("hello from the plain snippet"))
		var warned [][]any
		p.eval(t, `warned`, &warned)
		if len(warned) != 0 {
			t.Errorf("console.warn %v, want nothing: every topic exists", warned)
		}

		// Events without an id have none: presence, right after a room's
		// snapshot (which has one).
		p.eval(t, `(window.seen = [], import("/changecast.js").then(({ connect }) => {
			const f = connect({ topics: ["rooms/lobby"], storageKey: null });
			for (const type of ["snapshot", "presence"]) f.on(type, (e) => seen.push([type, e.id]));
		}), true)`, new(bool))
		p.waitUntil(t, browserWait, "presence arrives", `seen.some(([type]) => type === "presence")`)
		var seen [][2]string
		p.eval(t, `seen`, &seen)
		for _, s := range seen {
			if (s[0] == "presence") != (s[1] == "") {
				t.Errorf("%s event with id %q; want an id on snapshot only (%v)", s[0], s[1], seen)
			}
		}
	})

	t.Run("plain JavaScript as pasted", func(t *testing.T) {
		open(pages + "/as-pasted")
		p.waitUntil(t, browserWait, "the placeholder topic is reported", `warned.length > 0`)
		p.waitUntil(t, browserWait, "the title says live", `document.title === "live"`)
		post("the room streams beside a malformed topic")
		p.waitUntil(t, browserWait, "the message is in the list", chatHas("the room streams beside a malformed topic"))
		var warned [][]any
		p.eval(t, `warned`, &warned)
		want := []any{"orders/<order-id>", float64(400), `topic "orders/<order-id>" is not orders/<id>, rooms/<room>, orders or customers/<sub>`}
		if len(warned) != 1 || !slices.Equal(warned[0], want) {
			t.Errorf("console.warn %q, want once %q", warned, want)
		}
	})

	// The module alone, every topic refused (the placeholder again), with
	// short delays: offline comes before the refusal, each check repeats
	// the refusal (as the server repeats it on every connection), and the
	// rechecks say nothing else (no "reconnecting" that would hide it).
	t.Run("every topic refused, rechecked", func(t *testing.T) {
		p.eval(t, `(window.told = [], import("/changecast.js").then(({ connect }) => {
			const f = connect({ topics: ["orders/<order-id>"], storageKey: null, minDelay: 100, maxDelay: 300 });
			f.on("status", (s) => told.push(s.state + " " + (s.httpStatus ?? "")));
			f.on("refused", (e) => told.push("refused " + e.topic + " " + e.data.status + " " + (e.id || "no id")));
			window.refusedFeed = f;
		}), true)`, new(bool))
		p.waitUntil(t, browserWait, "three checks", `told.filter(s => s.startsWith("refused")).length >= 3`)
		var told []string
		p.eval(t, `(refusedFeed.close(), told)`, &told)
		// The status does not change between checks (the same 400, the
		// same wait: maxDelay after a 4xx), so it is told once.
		want := []string{"connecting ", "offline 400"}
		for range len(told) - 3 {
			want = append(want, "refused orders/<order-id> 400 no id")
		}
		want = append(want, "closed ")
		if !slices.Equal(told, want) {
			t.Errorf("the feed told %q; want %q", told, want)
		}
	})

	t.Run("React", func(t *testing.T) {
		open(pages + "/react")
		p.waitUntil(t, browserWait, "the page is ready", `typeof window.show === "function"`)
		p.eval(t, fmt.Sprintf(`(show(%s), true)`, browserJS(id)), new(bool))
		p.waitUntil(t, browserWait, "the order's status shows", `shown.at(-1) === "placed"`)
		browserREST(t, http.MethodPatch, base+"/api/orders/"+id, `{"status":"preparing"}`, "", http.StatusOK, nil)
		p.waitUntil(t, browserWait, "the new status shows", `shown.at(-1) === "preparing"`)
		var shown []string
		p.eval(t, `shown`, &shown)
		if len(shown) == 0 || shown[0] != "connecting" {
			t.Errorf("shown %q, want connecting first", shown)
		}

		// An unknown order: "not found" stays, not hidden by "offline".
		p.eval(t, `(show("0123456789abcdef01234567"), true)`, new(bool))
		p.waitUntil(t, browserWait, "the feed settles on the unknown order",
			`["not found", "not allowed", "offline"].includes(shown.at(-1))`)
		p.eval(t, `shown`, &shown)
		if shown[len(shown)-1] != "not found" {
			t.Errorf("shown %q for an unknown order; want it to end with \"not found\"", shown)
		}
	})

	t.Run("demo event log", func(t *testing.T) {
		open(base + "/")
		sel := `[...document.querySelectorAll('.log-entry[data-event="presence"]')]`
		p.waitUntil(t, browserWait, "presence is in the log", sel+`.length > 0`)
		var ids []string
		p.eval(t, sel+`.map(li => li.dataset.id + "|" + li.querySelector(".log-id").textContent)`, &ids)
		for _, s := range ids {
			if s != "|no id" {
				t.Errorf("presence log entry shows %q, want no id", s)
			}
		}
	})
}

// TestSnippetsChromium runs the README's Browser client snippets as
// written (see the top of this file for the substitutions) in Chromium:
//   - plain JavaScript: the title goes connecting → live (the first status
//     is seen), a message posted to the room is listed, nothing is warned;
//     a presence event has no id (a snapshot has one);
//   - plain JavaScript as pasted (`orders/<order-id>` left in): the
//     placeholder is warned once with 400 and the server's text, while the
//     room streams and the title says live;
//   - the module with that topic alone: connecting, offline 400, then the
//     refusal again on each recheck and no other status in between;
//   - React: the order's status shows and follows a change; an unknown
//     order ends on "not found", not "offline";
//   - the demo's event log shows no id on presence.
func TestSnippetsChromium(t *testing.T) {
	chrome := browserChromium(t)
	p := newBrowserPage(t, browserAllocator(t, chrome), "snippets")
	snippetScenario(t, p, func(url string) { p.do(t, "open "+url, chromedp.Navigate(url)) })
}

// TestSnippetsFirefox runs TestSnippetsChromium's scenario in Firefox ESR.
func TestSnippetsFirefox(t *testing.T) {
	b := startFirefox(t)
	p := newFirefoxTab(t, b, "snippets", true)
	snippetScenario(t, p, func(url string) { p.navigate(t, url) })
}

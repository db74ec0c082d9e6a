package handlers

import (
	"net/url"
	"path"
	"regexp"
	"strings"
	"testing"

	"changecast/static"
)

// The demo page's modules, as the server serves the embedded files:
// starting at index.html's module script and following every import,
// each module answers 200 with a JavaScript Content-Type (a browser
// refuses a module script of any other type) and no caching that would
// keep an old module after a deploy. Every .js file embedded is reached.
func TestDemoModulesServed(t *testing.T) {
	e := newEnv(t, dev, func(c *Config) { c.Static = static.FS })
	page := e.do(t, req{method: "GET", path: "/"})
	mustStatus(t, page, 200)
	entry := regexp.MustCompile(`<script type="module" src="([^"]+)">`).FindSubmatch(page.body)
	if entry == nil {
		t.Fatalf("index.html loads no module script: %s", page.body)
	}
	imports := regexp.MustCompile(`(?m)^import (?:[^"]*) from "([^"]+)";`)
	base, _ := url.Parse("http://changecast/")
	queue := []*url.URL{base.ResolveReference(&url.URL{Path: string(entry[1])})}
	served := map[string]bool{}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		if served[u.Path] {
			continue
		}
		served[u.Path] = true
		r := e.do(t, req{method: "GET", path: u.Path})
		if r.status != 200 {
			t.Errorf("GET %s: %d, want 200", u.Path, r.status)
			continue
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
			t.Errorf("GET %s: Content-Type %q, want text/javascript", u.Path, ct)
		}
		if cc := r.header.Get("Cache-Control"); strings.Contains(cc, "immutable") || strings.Contains(cc, "max-age") {
			t.Errorf("GET %s: Cache-Control %q keeps a module past a deploy", u.Path, cc)
		}
		for _, m := range imports.FindAllSubmatch(r.body, -1) {
			spec := string(m[1])
			if !strings.HasPrefix(spec, "./") && !strings.HasPrefix(spec, "../") && !strings.HasPrefix(spec, "/") {
				t.Errorf("%s imports %q: a browser resolves only relative or absolute URLs without an import map", u.Path, spec)
				continue
			}
			queue = append(queue, u.ResolveReference(&url.URL{Path: spec}))
		}
	}
	var embedded []string
	for _, dir := range []string{".", "demo"} {
		entries, err := static.FS.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range entries {
			if strings.HasSuffix(de.Name(), ".js") {
				embedded = append(embedded, "/"+path.Join(dir, de.Name()))
			}
		}
	}
	for _, p := range embedded {
		if !served[p] {
			t.Errorf("%s is embedded, and no module of the page imports it", p)
		}
	}
	if len(served) < 10 {
		t.Errorf("the page loads %d modules; want the demo's modules and changecast.js", len(served))
	}
}

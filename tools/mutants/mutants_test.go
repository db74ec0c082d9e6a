package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const sampleList = `# a comment

name: first
desc: two edits in one file
pkgs: ./a ./b
run: ^TestX$
skip: ^TestSlow$
timeout: 90s
file: a/a.go
--- old
	if x <= y {

		return
--- new
	if x < y {
		return
--- end
--- old
func f() {}
--- new
--- end

name: second
desc: one edit
pkgs: ./a
file: a/a.go
--- old
	# not a comment inside a block
--- new
	// changed
--- end
`

func TestParseList(t *testing.T) {
	got, err := parseList(strings.NewReader(sampleList))
	if err != nil {
		t.Fatal(err)
	}
	want := []mutant{{
		Name: "first", Desc: "two edits in one file", Pkgs: []string{"./a", "./b"},
		Run: "^TestX$", Skip: "^TestSlow$", Timeout: 90 * time.Second, Line: 3,
		Edits: []edit{
			{File: "a/a.go", Old: "\tif x <= y {\n\n\t\treturn", New: "\tif x < y {\n\t\treturn"},
			{File: "a/a.go", Old: "func f() {}", New: ""},
		},
	}, {
		Name: "second", Desc: "one edit", Pkgs: []string{"./a"}, Line: 23,
		Edits: []edit{{File: "a/a.go", Old: "\t# not a comment inside a block", New: "\t// changed"}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseListErrors(t *testing.T) {
	const head = "name: m\ndesc: d\npkgs: ./a\nfile: a.go\n"
	for _, tc := range []struct{ name, list, want string }{
		{"key before name", "desc: d\n", "before the first name"},
		{"unknown key", head + "color: red\n", `unknown key "color"`},
		{"code outside a block", head + "\tif x {\n", "want \"key: value\""},
		{"no edit", "name: m\ndesc: d\npkgs: ./a\n", "has no edit"},
		{"no desc", "name: m\npkgs: ./a\nfile: a.go\n--- old\nx\n--- new\ny\n--- end\n", "has no desc"},
		{"no pkgs", "name: m\ndesc: d\nfile: a.go\n--- old\nx\n--- new\ny\n--- end\n", "has no pkgs"},
		{"block without file", "name: m\ndesc: d\npkgs: ./a\n--- old\nx\n--- new\ny\n--- end\n", "before a name and a func or file"},
		{"unclosed old", head + "--- old\nx\n", "not closed by --- new"},
		{"unclosed new", head + "--- old\nx\n--- new\ny\n", "not closed by --- end"},
		{"end instead of new", head + "--- old\nx\n--- end\n", "unexpected"},
		{"empty old", head + "--- old\n--- new\ny\n--- end\n", "empty old text"},
		{"no change", head + "--- old\nx\n--- new\nx\n--- end\n", "new text equals old text"},
		{"duplicate name", head + "--- old\nx\n--- new\ny\n--- end\n" + head + "--- old\nx\n--- new\ny\n--- end\n", "already named on line 1"},
		{"bad name", "name: a b\n", "bad mutant name"},
		{"bad run", "name: m\nrun: (\n", "run:"},
		{"bad timeout", "name: m\ntimeout: soon\n", "not a positive duration"},
		{"file outside", "name: m\nfile: ../x.go\n", "inside the module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseList(strings.NewReader(tc.list))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// writeTree writes files (path relative to a new temporary root →
// content) and returns the root.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestApply(t *testing.T) {
	root := writeTree(t, map[string]string{
		"a/a.go": "package a\n\nfunc f(x, y int) bool { return x <= y }\n\nfunc g() {}\n",
		"b/b.go": "package b\n\nvar twice = 1 + 1\n",
	})
	m := mutant{Name: "m", Edits: []edit{
		{File: "a/a.go", Old: "x <= y", New: "x < y"},
		{File: "a/a.go", Old: "func g() {}\n", New: ""},
		{File: "b/b.go", Old: "1 + 1", New: "1 + 2"},
	}}
	got, err := apply(root, m)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"a/a.go": "package a\n\nfunc f(x, y int) bool { return x < y }\n\n",
		"b/b.go": "package b\n\nvar twice = 1 + 2\n",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d files, want %d", len(got), len(want))
	}
	for name, w := range want {
		if string(got[name]) != w {
			t.Errorf("%s: got %q, want %q", name, got[name], w)
		}
	}
	// The tree itself is untouched.
	if b, _ := os.ReadFile(filepath.Join(root, "a", "a.go")); !strings.Contains(string(b), "x <= y") {
		t.Errorf("apply modified the file on disk: %q", b)
	}
}

func TestApplyStale(t *testing.T) {
	root := writeTree(t, map[string]string{"a.go": "package a\n\nvar x = 1 + 1\nvar y = 1 + 1\n"})
	for _, tc := range []struct {
		name  string
		edits []edit
		found string
	}{
		{"missing", []edit{{File: "a.go", Old: "2 + 2", New: "3"}}, "found 0 times"},
		{"twice", []edit{{File: "a.go", Old: "1 + 1", New: "3"}}, "found 2 times"},
		// The second edit's text was consumed by the first: they overlap.
		{"overlapping", []edit{{File: "a.go", Old: "var x = 1", New: "var x = 2"}, {File: "a.go", Old: "x = 1 + 1", New: "x = 0"}}, "found 0 times"},
		// Whitespace counts: a space is not the tab gofmt writes.
		{"whitespace", []edit{{File: "a.go", Old: "var x  = 1", New: "var x = 2"}}, "found 0 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apply(root, mutant{Name: "m", Edits: tc.edits})
			if !errors.Is(err, errStale) || !strings.Contains(err.Error(), tc.found) {
				t.Errorf("got error %v, want errStale, %s", err, tc.found)
			}
		})
	}
	_, err := apply(root, mutant{Name: "m", Edits: []edit{{File: "gone.go", Old: "x", New: "y"}}})
	if err == nil || errors.Is(err, errStale) {
		t.Errorf("missing file: got error %v, want a read error that is not errStale", err)
	}
}

func TestWriteOverlay(t *testing.T) {
	root := writeTree(t, map[string]string{"a/x.go": "old a", "b/x.go": "old b"})
	dir := t.TempDir()
	path, err := writeOverlay(root, dir, map[string][]byte{"a/x.go": []byte("new a"), "b/x.go": []byte("new b")})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ov struct{ Replace map[string]string }
	if err := json.Unmarshal(data, &ov); err != nil {
		t.Fatalf("overlay.json: %v\n%s", err, data)
	}
	if len(ov.Replace) != 2 {
		t.Fatalf("got %d replacements, want 2: %s", len(ov.Replace), data)
	}
	for _, name := range []string{"a", "b"} {
		orig := filepath.Join(root, name, "x.go")
		repl, ok := ov.Replace[orig]
		if !ok {
			t.Fatalf("no replacement for %s: %s", orig, data)
		}
		if !filepath.IsAbs(repl) || filepath.Base(repl) != "x.go" {
			t.Errorf("replacement %s: want an absolute path keeping the base name x.go", repl)
		}
		if b, _ := os.ReadFile(repl); string(b) != "new "+name {
			t.Errorf("replacement of %s holds %q, want %q", orig, b, "new "+name)
		}
		if b, _ := os.ReadFile(orig); string(b) != "old "+name {
			t.Errorf("original %s changed to %q", orig, b)
		}
	}
}

// jsonLines turns test2json events, written compactly, into the lines
// go test -json prints.
func jsonLines(evs ...string) string { return strings.Join(evs, "\n") + "\n" }

func TestParseOutcome(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want outcome
	}{{
		name: "passed",
		out: jsonLines(
			`{"Action":"start","Package":"m/a"}`,
			`{"Action":"run","Package":"m/a","Test":"TestA"}`,
			`{"Action":"run","Package":"m/a","Test":"TestA/sub"}`,
			`{"Action":"pass","Package":"m/a","Test":"TestA/sub"}`,
			`{"Action":"pass","Package":"m/a","Test":"TestA"}`,
			`{"Action":"run","Package":"m/b","Test":"TestB"}`,
			`{"Action":"pass","Package":"m/b","Test":"TestB"}`,
			`{"Action":"pass","Package":"m/a"}`,
		),
		want: outcome{Ran: 2},
	}, {
		name: "subtest fails first",
		out: jsonLines(
			`{"Action":"run","Package":"m/a","Test":"TestA"}`,
			`{"Action":"run","Package":"m/a","Test":"TestA/dup"}`,
			`{"Action":"output","Package":"m/a","Test":"TestA/dup","Output":"    a_test.go:9: got 2 events, want 1\n"}`,
			`{"Action":"fail","Package":"m/a","Test":"TestA/dup"}`,
			`{"Action":"fail","Package":"m/a","Test":"TestA"}`,
			`{"Action":"run","Package":"m/b/c","Test":"TestC"}`,
			`{"Action":"fail","Package":"m/b/c","Test":"TestC"}`,
			`{"Action":"run","Package":"m/a","Test":"TestA"}`,
			`{"Action":"run","Package":"m/a","Test":"TestA/dup"}`,
			`{"Action":"fail","Package":"m/a","Test":"TestA/dup"}`,
			`{"Action":"fail","Package":"m/a","Test":"TestA"}`,
			`{"Action":"fail","Package":"m/a"}`,
			`{"Action":"fail","Package":"m/b/c"}`,
		),
		want: outcome{Killed: true, By: "a TestA/dup", KillerPkg: "m/a", KillerTest: "TestA/dup", Failed: []string{"a TestA/dup", "a TestA", "b/c TestC"}, Ran: 3},
	}, {
		name: "timeout",
		out: jsonLines(
			`{"Action":"run","Package":"m/a","Test":"TestOK"}`,
			`{"Action":"pass","Package":"m/a","Test":"TestOK"}`,
			`{"Action":"run","Package":"m/a","Test":"TestHangs"}`,
			`{"Action":"output","Package":"m/a","Test":"TestHangs","Output":"panic: test timed out after 5s\n"}`,
			`{"Action":"output","Package":"m/a","Test":"TestHangs","Output":"\trunning tests:\n"}`,
			`{"Action":"output","Package":"m/a","Test":"TestHangs","Output":"\t\tTestHangs (5s)\n"}`,
			`{"Action":"output","Package":"m/a","Test":"TestHangs","Output":"\t\tTestOther (4s)\n"}`,
			`{"Action":"fail","Package":"m/a","Test":"TestHangs"}`,
			`{"Action":"fail","Package":"m/a"}`,
		),
		want: outcome{Killed: true, By: "a TestHangs (timeout)", KillerPkg: "m/a", KillerTest: "TestHangs", Failed: []string{"a TestHangs"}, Ran: 2},
	}, {
		name: "timeout reported without a failing test",
		out: jsonLines(
			`{"Action":"run","Package":"m/a","Test":"TestHangs"}`,
			`{"Action":"output","Package":"m/a","Test":"TestHangs","Output":"panic: test timed out after 5s\n"}`,
			`{"Action":"output","Package":"m/a","Test":"TestHangs","Output":"\trunning tests:\n"}`,
			`{"Action":"output","Package":"m/a","Test":"TestHangs","Output":"\t\tTestHangs (5s)\n"}`,
			`{"Action":"fail","Package":"m/a"}`,
		),
		want: outcome{Killed: true, By: "a TestHangs (timeout)", KillerPkg: "m/a", KillerTest: "TestHangs", Ran: 1},
	}, {
		name: "a failure before another package times out",
		out: jsonLines(
			`{"Action":"run","Package":"m/a","Test":"TestFails"}`,
			`{"Action":"fail","Package":"m/a","Test":"TestFails"}`,
			`{"Action":"run","Package":"m/b","Test":"TestHangs"}`,
			`{"Action":"output","Package":"m/b","Test":"TestHangs","Output":"panic: test timed out after 5s\n"}`,
			`{"Action":"output","Package":"m/b","Test":"TestHangs","Output":"\trunning tests:\n"}`,
			`{"Action":"output","Package":"m/b","Test":"TestHangs","Output":"\t\tTestHangs (5s)\n"}`,
			`{"Action":"fail","Package":"m/b","Test":"TestHangs"}`,
			`{"Action":"fail","Package":"m/a"}`,
			`{"Action":"fail","Package":"m/b"}`,
		),
		want: outcome{Killed: true, By: "a TestFails", KillerPkg: "m/a", KillerTest: "TestFails", Failed: []string{"a TestFails", "b TestHangs"}, Ran: 2},
	}, {
		name: "leak found by TestMain",
		out: jsonLines(
			`{"Action":"run","Package":"m/a","Test":"TestA"}`,
			`{"Action":"pass","Package":"m/a","Test":"TestA"}`,
			`{"Action":"output","Package":"m/a","Output":"goleak: Errors on successful test run: found unexpected goroutines:\n"}`,
			`{"Action":"fail","Package":"m/a"}`,
		),
		want: outcome{Killed: true, By: "a (TestMain: leaked goroutines)", Ran: 1},
	}, {
		name: "does not compile",
		out: jsonLines(
			`{"ImportPath":"m/a [m/a.test]","Action":"build-output","Output":"# m/a [m/a.test]\n"}`,
			`{"ImportPath":"m/a [m/a.test]","Action":"build-output","Output":"a.go:3:6: declared and not used: x\n"}`,
			`{"ImportPath":"m/a [m/a.test]","Action":"build-fail"}`,
			`{"Action":"start","Package":"m/a"}`,
			`{"Action":"output","Package":"m/a","Output":"FAIL\tm/a [build failed]\n"}`,
			`{"Action":"fail","Package":"m/a","FailedBuild":"m/a [m/a.test]"}`,
		),
		want: outcome{Broken: true, BuildOutput: "# m/a [m/a.test]\na.go:3:6: declared and not used: x\n"},
	}, {
		name: "go command message",
		out:  "go: warning: something\n" + jsonLines(`{"Action":"run","Package":"m/a","Test":"TestA"}`, `{"Action":"pass","Package":"m/a","Test":"TestA"}`),
		want: outcome{Ran: 1, BuildOutput: "go: warning: something\n"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseOutcome(strings.NewReader(tc.out), "m")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestTestArgs(t *testing.T) {
	m := mutant{Pkgs: []string{"./a", "./b"}, Run: "^TestX$", Skip: "^TestSlow$"}
	r := &runner{opts: options{count: 3, race: true, timeout: 2 * time.Minute}}
	got := strings.Join(r.testArgs(m), " ")
	want := "test -json -vet=off -count=3 -timeout=6m0s -race -run=^TestX$ -skip=^TestSlow$ ./a ./b"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	m.Timeout = 10 * time.Second
	r.opts = options{count: 1, check: true, timeout: time.Minute}
	got = strings.Join(r.testArgs(m), " ")
	want = "test -json -vet=off -count=1 -timeout=10s -run=^$ ./a ./b"
	if got != want {
		t.Errorf("-check: got  %s\nwant %s", got, want)
	}
}

func TestSummarize(t *testing.T) {
	m := func(name string) mutant {
		return mutant{Name: name, Desc: "bug " + name, Edits: []edit{{File: "x.go"}, {File: "x.go"}}}
	}
	var sb strings.Builder
	code := summarize(&sb, []result{{m: m("a"), status: killed}, {m: m("b"), status: stale}, {m: m("c"), status: survived}}, time.Minute)
	if code != 1 {
		t.Errorf("exit code %d with a survivor, want 1", code)
	}
	want := "\n3 mutants in 1m0s: 1 killed, 1 survived, 1 stale\nnot killed:\n" +
		"  SURVIVED c: bug c (x.go)\n  STALE    b: bug b (x.go)\n"
	if sb.String() != want {
		t.Errorf("got\n%s\nwant\n%s", sb.String(), want)
	}
	sb.Reset()
	if code := summarize(&sb, []result{{m: m("a"), status: killed}, {m: m("b"), status: checked}}, time.Second); code != 0 {
		t.Errorf("exit code %d when every mutant is killed or checked, want 0:\n%s", code, sb.String())
	}
}

// TestListMatchesTree checks the real list against the tree: it parses,
// and every mutant's old texts are found exactly once, so a change that
// moves the mutated code fails here (rewrite the mutant in mutants.txt)
// instead of leaving a mutant that tests nothing.
func TestListMatchesTree(t *testing.T) {
	f, err := os.Open("mutants.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := parseList(f)
	if err != nil {
		t.Fatalf("mutants.txt: %v", err)
	}
	if len(ms) == 0 {
		t.Fatal("mutants.txt holds no mutant")
	}
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not at %s: %v", root, err)
	}
	for _, m := range ms {
		if _, err := apply(root, m); err != nil {
			t.Errorf("mutants.txt line %d: %v", m.Line, err)
		}
	}
}

func TestRunPattern(t *testing.T) {
	for test, want := range map[string]string{
		"TestA":           "^TestA$",
		"TestA/dup_id":    "^TestA$/^dup_id$",
		"TestA/a.b+c/[0]": `^TestA$/^a\.b\+c$/^\[0\]$`,
	} {
		if got := runPattern(test); got != want {
			t.Errorf("runPattern(%q) = %q, want %q", test, got, want)
		}
	}
}

func TestParseFuncAnchor(t *testing.T) {
	ms, err := parseList(strings.NewReader("name: m\ndesc: d\npkgs: ./a\nfunc: a (*T).f\n--- old\nx\n--- new\ny\n--- end\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (edit{Dir: "a", Func: "(*T).f", Old: "x", New: "y"}); len(ms) != 1 || !reflect.DeepEqual(ms[0].Edits, []edit{want}) {
		t.Errorf("got %+v, want one edit %+v", ms, want)
	}
	for _, bad := range []string{"a", "a b c", "/abs f", "../up f"} {
		_, err := parseList(strings.NewReader("name: m\ndesc: d\npkgs: ./a\nfunc: " + bad + "\n"))
		if err == nil || !strings.Contains(err.Error(), "package dir") {
			t.Errorf("func: %s: got error %v", bad, err)
		}
	}
}

// An edit anchored on a function finds it in whichever file of the
// package holds it, counts the old text inside the function alone, and
// tells methods of different receivers apart.
func TestApplyInFunc(t *testing.T) {
	root := writeTree(t, map[string]string{
		"p/a.go": "package p\n\ntype T struct{}\n\nfunc (T) g(x int) bool { return x <= 1 }\n\nfunc f(x int) bool { return x <= 1 }\n",
		"p/b.go": "package p\n\ntype U[K any] struct{}\n\nfunc (*U[K]) g(x int) bool { return x <= 1 }\n",
	})
	for _, tc := range []struct{ fn, file, want string }{
		{"f", "p/a.go", "package p\n\ntype T struct{}\n\nfunc (T) g(x int) bool { return x <= 1 }\n\nfunc f(x int) bool { return x < 1 }\n"},
		{"T.g", "p/a.go", "package p\n\ntype T struct{}\n\nfunc (T) g(x int) bool { return x < 1 }\n\nfunc f(x int) bool { return x <= 1 }\n"},
		{"(*U).g", "p/b.go", "package p\n\ntype U[K any] struct{}\n\nfunc (*U[K]) g(x int) bool { return x < 1 }\n"},
	} {
		got, err := apply(root, mutant{Name: "m", Edits: []edit{{Dir: "p", Func: tc.fn, Old: "x <= 1", New: "x < 1"}}})
		if err != nil {
			t.Fatalf("%s: %v", tc.fn, err)
		}
		if len(got) != 1 || string(got[tc.file]) != tc.want {
			t.Errorf("%s: got %q, want %s as %q", tc.fn, got, tc.file, tc.want)
		}
	}
	for _, tc := range []struct{ fn, old, found string }{
		{"h", "x", "function h not found"},
		{"f", "x <= 2", "found 0 times"},
		{"f", "x", "found 2 times"},
		{"(*T).g", "x <= 1", "function (*T).g not found"},
	} {
		_, err := apply(root, mutant{Name: "m", Edits: []edit{{Dir: "p", Func: tc.fn, Old: tc.old, New: "y"}}})
		if !errors.Is(err, errStale) || !strings.Contains(err.Error(), tc.found) {
			t.Errorf("%s %q: got error %v, want errStale, %s", tc.fn, tc.old, err, tc.found)
		}
	}
}

func TestAnchorList(t *testing.T) {
	root := writeTree(t, map[string]string{
		"p/a.go": "package p\n\nimport \"sync\"\n\nvar mu sync.Mutex\n\nfunc f(x int) bool { return x <= 1 }\n\nfunc g(x int) bool { return x >= 1 }\n",
	})
	const list = "# head\nname: m\ndesc: d\npkgs: ./p\nfile: p/a.go\n--- old\nimport \"sync\"\n--- new\nimport sync \"sync\"\n--- end\n--- old\nx <= 1\n--- new\nx < 1\n--- end\n--- old\nx >= 1\n--- new\nfile: not a key\n--- end\n"
	got, moved, err := anchorList(root, list)
	if err != nil {
		t.Fatal(err)
	}
	want := "# head\nname: m\ndesc: d\npkgs: ./p\nfile: p/a.go\n--- old\nimport \"sync\"\n--- new\nimport sync \"sync\"\n--- end\nfunc: p f\n--- old\nx <= 1\n--- new\nx < 1\n--- end\nfunc: p g\n--- old\nx >= 1\n--- new\nfile: not a key\n--- end\n"
	if got != want || moved != 2 {
		t.Errorf("moved %d, got\n%s\nwant (2 moved)\n%s", moved, got, want)
	}
	ms, err := parseList(strings.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply(root, ms[0]); err != nil {
		t.Errorf("the anchored list does not apply: %v", err)
	}
}

// Command mutants runs hand-written mutants of changecast's data path: for
// each deliberate bug in its list it runs the tests that should notice it,
// through `go test -overlay` (no file in the tree is modified), and says
// whether a test failed (killed) or none did (survived), which test failed
// first and how long it took. It exits non-zero if a mutant survives, if a
// mutant's old text is not found exactly once in its file (the code moved:
// rewrite the mutant), or if a mutant does not compile.
//
//	go run ./tools/mutants [-count N] [-race] [-only regexp] [-list file]
//
// The list format is described in list.go and docs/testing.md. The
// overlay is passed through GOFLAGS, so tests that build the server
// binary themselves (go build inside a test) build the mutant too.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the command's flags.
type options struct {
	list    string
	only    *regexp.Regexp
	count   int
	race    bool
	timeout time.Duration
	verbose bool
	check   bool
	confirm bool
	anchor  bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the command: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mutants", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts options
	var only string
	fs.StringVar(&opts.list, "list", "tools/mutants/mutants.txt", "the mutant list, relative to the module root unless absolute")
	fs.StringVar(&only, "only", "", "run only the mutants whose name matches this regexp (anchored: -only 'M1|M3' is exactly M1 or M3)")
	fs.IntVar(&opts.count, "count", 1, "go test -count: how many times each test runs per mutant")
	fs.BoolVar(&opts.race, "race", false, "run the tests with the race detector")
	fs.DurationVar(&opts.timeout, "timeout", 3*time.Minute, "go test -timeout for one -count round of a mutant that sets none (a hung test kills its mutant)")
	fs.BoolVar(&opts.verbose, "v", false, "print the go test output of every mutant that survives or fails to build")
	fs.BoolVar(&opts.confirm, "confirm", true, "rerun the test that killed a mutant on the unmutated tree: if it fails there too, the mutant is FLAKY, not killed")
	fs.BoolVar(&opts.check, "check", false, "only check that every mutant's old text is found exactly once; run no test")
	fs.BoolVar(&opts.anchor, "anchor", false, "rewrite the list so that each block inside one function is anchored on it (func:) rather than on its file; run no test")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || opts.count < 1 {
		fmt.Fprintln(stderr, "usage: mutants [-count N] [-race] [-only regexp] [-list file] [-timeout d] [-v] [-check] [-anchor]")
		return 2
	}
	if only != "" {
		re, err := regexp.Compile("^(?:" + only + ")$")
		if err != nil {
			fmt.Fprintf(stderr, "mutants: -only: %v\n", err)
			return 2
		}
		opts.only = re
	}
	root, modPath, err := module(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "mutants: %v\n", err)
		return 2
	}
	listPath := opts.list
	if !filepath.IsAbs(listPath) {
		listPath = filepath.Join(root, listPath)
	}
	if opts.anchor {
		return rewriteAnchors(root, listPath, stdout, stderr)
	}
	f, err := os.Open(listPath)
	if err != nil {
		fmt.Fprintf(stderr, "mutants: %v\n", err)
		return 2
	}
	all, err := parseList(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "mutants: %s: %v\n", opts.list, err)
		return 2
	}
	var ms []mutant
	for _, m := range all {
		if opts.only == nil || opts.only.MatchString(m.Name) {
			ms = append(ms, m)
		}
	}
	if len(ms) == 0 {
		fmt.Fprintln(stderr, "mutants: no mutant selected")
		return 2
	}
	tmp, err := os.MkdirTemp("", "mutants-")
	if err != nil {
		fmt.Fprintf(stderr, "mutants: %v\n", err)
		return 2
	}
	defer os.RemoveAll(tmp)
	r := &runner{root: root, modPath: modPath, tmp: tmp, opts: opts, out: stdout}
	return r.runAll(ctx, ms)
}

// module returns the module's root directory and path, from the go
// command (so the tool runs from any directory inside the module).
func module(ctx context.Context) (root, path string, err error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}\n{{.Path}}").Output()
	if err != nil {
		return "", "", fmt.Errorf("go list -m: %w", err)
	}
	dir, p, ok := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if !ok || dir == "" || p == "" {
		return "", "", fmt.Errorf("go list -m: unexpected output %q", out)
	}
	return dir, p, nil
}

// Results of one mutant.
const (
	killed   = "killed"
	checked  = "ok" // -check: the old texts are found and the mutant compiles
	survived = "SURVIVED"
	stale    = "STALE"  // an old text is not found exactly once
	broken   = "BROKEN" // the mutant does not compile
	failed   = "ERROR"  // go test could not run, or ran no test
	flaky    = "FLAKY"  // the killing test fails without the mutant too
)

// result is one mutant's line in the report.
type result struct {
	m       mutant
	status  string
	by      string
	more    int // further failing tests
	elapsed time.Duration
	detail  string
}

type runner struct {
	root, modPath, tmp string
	opts               options
	out                io.Writer
}

// runAll runs ms one at a time, printing a line each and the summary, and
// returns the exit code.
func (r *runner) runAll(ctx context.Context, ms []mutant) int {
	start := time.Now()
	width := 0
	for _, m := range ms {
		width = max(width, len(m.Name))
	}
	mode := fmt.Sprintf("-count=%d", r.opts.count)
	if r.opts.race {
		mode += " -race"
	}
	if r.opts.check {
		mode = "check only"
	}
	fmt.Fprintf(r.out, "%d mutants (%s)\n", len(ms), mode)
	var results []result
	for i, m := range ms {
		if ctx.Err() != nil {
			fmt.Fprintln(r.out, "interrupted")
			return 2
		}
		res := r.one(ctx, m, i)
		results = append(results, res)
		by := res.by
		if res.more > 0 {
			by += fmt.Sprintf(" (+%d more)", res.more)
		}
		fmt.Fprintf(r.out, "[%2d/%d] %-*s  %-8s %6.1fs  %s\n", i+1, len(ms), width, m.Name, res.status, res.elapsed.Seconds(), by)
		if res.detail != "" && (res.status != survived || r.opts.verbose) {
			fmt.Fprintln(r.out, indent(res.detail, "        "))
		}
	}
	return summarize(r.out, results, time.Since(start))
}

// summarize prints the totals and every mutant that is not killed, and
// returns 0 only if every mutant was killed.
func summarize(w io.Writer, results []result, elapsed time.Duration) int {
	counts := map[string]int{}
	var bad []result
	for _, res := range results {
		counts[res.status]++
		if res.status != killed && res.status != checked {
			bad = append(bad, res)
		}
	}
	var parts []string
	for _, s := range []string{killed, checked, survived, flaky, stale, broken, failed} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], strings.ToLower(s)))
		}
	}
	fmt.Fprintf(w, "\n%d mutants in %s: %s\n", len(results), elapsed.Round(time.Second), strings.Join(parts, ", "))
	if len(bad) == 0 {
		return 0
	}
	rank := func(status string) int { return slices.Index([]string{survived, flaky, stale, broken, failed}, status) }
	slices.SortStableFunc(bad, func(a, b result) int { return rank(a.status) - rank(b.status) })
	fmt.Fprintln(w, "not killed:")
	for _, res := range bad {
		var files []string
		for _, e := range res.m.Edits {
			if !slices.Contains(files, e.File) {
				files = append(files, e.File)
			}
		}
		fmt.Fprintf(w, "  %-8s %s: %s (%s)\n", res.status, res.m.Name, res.m.Desc, strings.Join(files, ", "))
	}
	return 1
}

// one applies m through an overlay and runs its tests.
func (r *runner) one(ctx context.Context, m mutant, i int) result {
	start := time.Now()
	res := result{m: m}
	defer func() { res.elapsed = time.Since(start) }()
	files, err := apply(r.root, m)
	if err != nil {
		res.status, res.detail = stale, err.Error()
		if !errors.Is(err, errStale) {
			res.status = failed
		}
		res.elapsed = time.Since(start)
		return res
	}
	dir := filepath.Join(r.tmp, strconv.Itoa(i)+"-"+m.Name)
	ov, err := writeOverlay(r.root, dir, files)
	if err != nil {
		res.status, res.detail = failed, err.Error()
		res.elapsed = time.Since(start)
		return res
	}
	args := r.testArgs(m)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = r.root
	// The overlay goes through GOFLAGS so that a test running `go build`
	// itself (the end-to-end tests in e2e build the binary) builds the mutant.
	cmd.Env = append(os.Environ(), "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -overlay="+ov))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	o, perr := parseOutcome(&stdout, r.modPath)
	res.elapsed = time.Since(start)
	switch {
	case perr != nil:
		res.status, res.detail = failed, "reading go test output: "+perr.Error()
	case o.Broken:
		res.status, res.detail = broken, strings.TrimSpace(o.BuildOutput+stderr.String())
	case o.Killed:
		res.status, res.by, res.more = killed, o.By, max(len(o.Failed)-1, 0)
		if r.opts.confirm && o.KillerTest != "" {
			if err := r.confirm(ctx, m, o.KillerPkg, o.KillerTest); err != nil {
				res.status, res.detail = flaky, err.Error()
			}
		}
	case runErr != nil:
		res.status, res.detail = failed, fmt.Sprintf("go %s: %v\n%s%s", strings.Join(args, " "), runErr, o.BuildOutput, stderr.String())
	case r.opts.check:
		res.status = checked
	case o.Ran == 0:
		res.status, res.detail = failed, "no test ran: check pkgs and run"
	default:
		res.status = survived
		res.by = fmt.Sprintf("%d tests passed", o.Ran)
		res.detail = strings.TrimSpace(stderr.String())
	}
	return res
}

// confirm runs test of pkg, which failed under m, on the unmutated tree
// with the same flags. It returns an error if it fails there too: then it
// did not notice m, it is flaky (or the tree is broken).
func (r *runner) confirm(ctx context.Context, m mutant, pkg, test string) error {
	clean := m
	clean.Pkgs, clean.Run, clean.Skip = []string{pkg}, runPattern(test), ""
	args := r.testArgs(clean)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = r.root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	o, err := parseOutcome(&stdout, r.modPath)
	switch {
	case err != nil:
		return fmt.Errorf("confirming on the unmutated tree: %w", err)
	case o.Killed || o.Broken || runErr != nil:
		what := o.By
		if what == "" {
			what = strings.TrimSpace(o.BuildOutput + stderr.String())
		}
		return fmt.Errorf("%s %s also fails without the mutant: %s", pkg, test, what)
	case o.Ran == 0:
		return fmt.Errorf("confirming on the unmutated tree: go %s ran no test", strings.Join(args, " "))
	}
	return nil
}

// runPattern returns the -run regexp that selects exactly test, a test
// name as go test prints it (subtests after slashes).
func runPattern(test string) string {
	parts := strings.Split(test, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// testArgs returns the go test arguments for m (the overlay is in GOFLAGS).
// With -check they compile the tests of m's packages and run none.
func (r *runner) testArgs(m mutant) []string {
	timeout := m.Timeout
	if timeout == 0 {
		timeout = r.opts.timeout
	}
	// go test's timeout bounds a whole test binary, every -count round.
	timeout *= time.Duration(r.opts.count)
	// vet is off: a vet complaint about a mutant is not a test noticing it.
	args := []string{"test", "-json", "-vet=off", "-count=" + strconv.Itoa(r.opts.count), "-timeout=" + timeout.String()}
	if r.opts.race {
		args = append(args, "-race")
	}
	switch {
	case r.opts.check:
		args = append(args, "-run=^$")
	case m.Run != "":
		args = append(args, "-run="+m.Run)
	}
	if m.Skip != "" && !r.opts.check {
		args = append(args, "-skip="+m.Skip)
	}
	return append(args, m.Pkgs...)
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix)
}

// rewriteAnchors is -anchor: it rewrites the list at path in place (see
// anchorList) and checks that the result parses and still applies.
func rewriteAnchors(root, path string, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "mutants: %v\n", err)
		return 2
	}
	list, moved, err := anchorList(root, string(b))
	if err == nil {
		var ms []mutant
		if ms, err = parseList(strings.NewReader(list)); err == nil {
			for _, m := range ms {
				if _, err = apply(root, m); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "mutants: -anchor: %v (the list is left as it was)\n", err)
		return 1
	}
	if err := os.WriteFile(path, []byte(list), 0o644); err != nil {
		fmt.Fprintf(stderr, "mutants: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "%d blocks anchored on their function\n", moved)
	return 0
}

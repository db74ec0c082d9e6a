package main

import (
	"bufio"
	"encoding/json"
	"io"
	"slices"
	"strings"
)

// testEvent is one line of `go test -json` (cmd/test2json).
type testEvent struct {
	Action      string
	Package     string
	ImportPath  string // of build-output and build-fail events
	Test        string
	Output      string
	FailedBuild string
}

// outcome is what one `go test -json` run says about a mutant.
type outcome struct {
	// Killed is true when a test (or a test binary) failed.
	Killed bool
	// By names what failed first: "pkg TestName[/sub]", "pkg TestName
	// (timeout)", or "pkg (package)" when the binary failed outside any
	// test (TestMain's leak check, a panic in init).
	By string
	// KillerPkg and KillerTest are the import path and the test name
	// (with its subtests) of the test that failed first, if a test did.
	KillerPkg, KillerTest string
	// Failed lists every failing test, in the order they failed.
	Failed []string
	// Broken is true when a package did not compile: the mutant is wrong,
	// not caught. BuildOutput holds the compiler's messages.
	Broken      bool
	BuildOutput string
	// Ran counts the tests (not subtests) that started.
	Ran int
}

// parseOutcome reads `go test -json` output. Package paths are shown
// without the module prefix modPath. Lines that are not JSON (the go
// command's own messages) are kept in BuildOutput.
func parseOutcome(r io.Reader, modPath string) (outcome, error) {
	var (
		o        outcome
		first    []string // package and test of the first failure
		pkgFails []string
		// Output of each package's binary outside its tests, and of each
		// running test, to explain a failure that names no test.
		pkgOut   = map[string]*strings.Builder{}
		build    strings.Builder
		timeout  = map[string]string{} // package → the test running at a timeout
		panicked = map[string]bool{}   // package → its binary's timeout panic began
	)
	short := func(pkg string) string {
		if s, ok := strings.CutPrefix(pkg, modPath+"/"); ok {
			return s
		}
		return pkg
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev testEvent
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			build.Write(line)
			build.WriteByte('\n')
			continue
		}
		switch ev.Action {
		case "build-output":
			build.WriteString(ev.Output)
		case "run":
			if !strings.Contains(ev.Test, "/") {
				o.Ran++
			}
		case "output":
			if ev.Test == "" {
				b := pkgOut[ev.Package]
				if b == nil {
					b = &strings.Builder{}
					pkgOut[ev.Package] = b
				}
				if b.Len() < 64<<10 {
					b.WriteString(ev.Output)
				}
			}
			if strings.HasPrefix(ev.Output, "panic: test timed out") {
				panicked[ev.Package] = true
			} else if _, seen := timeout[ev.Package]; panicked[ev.Package] && !seen {
				if t, ok := timedOutTest(ev.Output); ok {
					timeout[ev.Package] = t
				}
			}
		case "fail":
			switch {
			case ev.Test != "":
				name := short(ev.Package) + " " + ev.Test
				if first == nil {
					first = []string{ev.Package, ev.Test}
				}
				if !slices.Contains(o.Failed, name) {
					o.Failed = append(o.Failed, name)
				}
			case ev.FailedBuild != "":
				o.Broken = true
			default:
				pkgFails = append(pkgFails, ev.Package)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return o, err
	}
	o.BuildOutput = build.String()
	if o.Broken {
		return o, nil
	}
	if len(o.Failed) > 0 {
		o.Killed, o.By = true, o.Failed[0]
		o.KillerPkg, o.KillerTest = first[0], first[1]
		if timeout[first[0]] == first[1] {
			o.By += " (timeout)"
		}
		return o, nil
	}
	// A binary that timed out names the test that hung even when
	// test2json reports no test failed.
	for _, pkg := range pkgFails {
		if t, ok := timeout[pkg]; ok {
			o.Killed, o.By = true, short(pkg)+" "+t+" (timeout)"
			o.KillerPkg, o.KillerTest = pkg, t
			return o, nil
		}
	}
	if len(pkgFails) > 0 {
		pkg := pkgFails[0]
		why := "package"
		if b := pkgOut[pkg]; b != nil && strings.Contains(b.String(), "goleak") {
			why = "TestMain: leaked goroutines"
		} else if b != nil && strings.Contains(b.String(), "panic:") {
			why = "panic outside a test"
		}
		o.Killed, o.By = true, short(pkg)+" ("+why+")"
	}
	return o, nil
}

// timedOutTest returns the first test named after "running tests:" in a
// test binary's timeout panic, which test2json passes on line by line:
//
//	panic: test timed out after 2m0s
//		running tests:
//			TestX (2m0s)
//
// It recognises the line naming the test by its two tabs and trailing
// "(duration)".
func timedOutTest(out string) (string, bool) {
	line := strings.TrimRight(out, "\n")
	if !strings.HasPrefix(line, "\t\t") || !strings.HasSuffix(line, ")") {
		return "", false
	}
	name, dur, ok := strings.Cut(strings.TrimSpace(line), " (")
	if !ok || !strings.HasPrefix(name, "Test") || strings.ContainsAny(name, " \t") || !strings.HasSuffix(dur, "s)") {
		return "", false
	}
	return name, true
}

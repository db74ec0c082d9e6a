package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// mutant is one deliberate bug: edits to one or more files, and the tests
// that should notice it.
type mutant struct {
	Name    string
	Desc    string
	Pkgs    []string      // package patterns given to go test
	Run     string        // -run regexp; empty runs every test of Pkgs
	Skip    string        // -skip regexp; empty skips none
	Timeout time.Duration // go test -timeout; zero takes the command's flag
	Edits   []edit
	Line    int // where the mutant starts in the list, for messages
}

// edit replaces Old by New. Old must occur exactly once in File (a path
// relative to the module root, with slashes) or, when Func is set, in the
// declaration of the function Func of the package in directory Dir
// (anchor.go), whichever file holds it.
type edit struct {
	File string
	Dir  string
	Func string
	Old  string
	New  string
}

// Markers of the text blocks of an edit. No Go line starts with "--- ",
// so a block can hold any code, blank lines and comments included.
const (
	markOld = "--- old"
	markNew = "--- new"
	markEnd = "--- end"
)

// validName is what a mutant may be called: short, and safe in a file
// name and a regexp given to -only.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// parseList reads a mutant list. Outside a text block, blank lines and
// lines starting with # are ignored, and every other line is "key: value":
//
//	name: M3-resume-boundary      starts a mutant
//	desc: one line saying what the bug is
//	pkgs: ./stream ./handlers     packages to test, space-separated
//	run:  ^TestResume             optional -run regexp
//	skip: ^TestBrowserDemo$       optional -skip regexp
//	timeout: 2m                   optional go test -timeout, per -count round
//	func: stream (*session).step  the function the following blocks edit
//	file: stream/subscriber.go    or the file, for text outside a function
//	--- old
//	exact text, any number of lines
//	--- new
//	its replacement (may be empty)
//	--- end
//
// A mutant may edit several files, and a file in several places: each
// "func:" or "file:" applies to the blocks after it. A block's text is its lines
// joined by newlines, without a final one; tabs are kept as written.
func parseList(r io.Reader) ([]mutant, error) {
	var (
		out   []mutant
		cur   *mutant
		at    edit // File, or Dir and Func, of the blocks that follow
		names = map[string]int{}
		sc    = bufio.NewScanner(r)
		n     int
	)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		n++
		return strings.TrimSuffix(sc.Text(), "\r"), true
	}
	// block reads lines up to one of ends and returns them joined, and the
	// end marker met.
	block := func(start int, ends ...string) (string, string, error) {
		var lines []string
		for {
			line, ok := next()
			if !ok {
				return "", "", fmt.Errorf("line %d: text block not closed by %s", start, strings.Join(ends, " or "))
			}
			for _, e := range ends {
				if line == e {
					return strings.Join(lines, "\n"), e, nil
				}
			}
			if strings.HasPrefix(line, "--- ") {
				return "", "", fmt.Errorf("line %d: unexpected %q (want %s)", n, line, strings.Join(ends, " or "))
			}
			lines = append(lines, line)
		}
	}
	finish := func() error {
		if cur == nil {
			return nil
		}
		switch {
		case cur.Desc == "":
			return fmt.Errorf("line %d: mutant %s has no desc", cur.Line, cur.Name)
		case len(cur.Pkgs) == 0:
			return fmt.Errorf("line %d: mutant %s has no pkgs", cur.Line, cur.Name)
		case len(cur.Edits) == 0:
			return fmt.Errorf("line %d: mutant %s has no edit", cur.Line, cur.Name)
		}
		out = append(out, *cur)
		cur = nil
		return nil
	}
	for {
		line, ok := next()
		if !ok {
			break
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line == markOld {
			if cur == nil || (at.File == "" && at.Func == "") {
				return nil, fmt.Errorf("line %d: %s before a name and a func or file", n, markOld)
			}
			start := n
			old, _, err := block(start, markNew)
			if err != nil {
				return nil, err
			}
			if old == "" {
				return nil, fmt.Errorf("line %d: empty old text", start)
			}
			repl, _, err := block(start, markEnd)
			if err != nil {
				return nil, err
			}
			if repl == old {
				return nil, fmt.Errorf("line %d: new text equals old text", start)
			}
			e := at
			e.Old, e.New = old, repl
			cur.Edits = append(cur.Edits, e)
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("line %d: want \"key: value\" or a %s block, got %q", n, markOld, line)
		}
		val = strings.TrimSpace(val)
		if key != "name" && cur == nil {
			return nil, fmt.Errorf("line %d: %s before the first name", n, key)
		}
		switch key {
		case "name":
			if err := finish(); err != nil {
				return nil, err
			}
			if !validName.MatchString(val) {
				return nil, fmt.Errorf("line %d: bad mutant name %q", n, val)
			}
			if prev, dup := names[val]; dup {
				return nil, fmt.Errorf("line %d: mutant %s already named on line %d", n, val, prev)
			}
			names[val] = n
			cur, at = &mutant{Name: val, Line: n}, edit{}
		case "desc":
			cur.Desc = val
		case "pkgs":
			cur.Pkgs = strings.Fields(val)
		case "run":
			if _, err := regexp.Compile(val); err != nil {
				return nil, fmt.Errorf("line %d: run: %w", n, err)
			}
			cur.Run = val
		case "skip":
			if _, err := regexp.Compile(val); err != nil {
				return nil, fmt.Errorf("line %d: skip: %w", n, err)
			}
			cur.Skip = val
		case "timeout":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("line %d: timeout %q is not a positive duration", n, val)
			}
			cur.Timeout = d
		case "file":
			if val == "" || strings.HasPrefix(val, "/") || strings.Contains(val, "..") {
				return nil, fmt.Errorf("line %d: file %q must be a path inside the module", n, val)
			}
			at = edit{File: val}
		case "func":
			dir, name, err := parseFuncAnchor(val)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			at = edit{Dir: dir, Func: name}
		default:
			return nil, fmt.Errorf("line %d: unknown key %q", n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return out, nil
}

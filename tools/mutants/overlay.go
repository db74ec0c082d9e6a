package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// errStale is wrapped by apply's error when an old text is not found
// exactly once (in its file, or in its function), or its function is
// not found: the code changed and the mutant must be rewritten.
var errStale = errors.New("old text not found exactly once")

// apply returns the mutated content of every file m edits, keyed by the
// file's path relative to root. Each old text must occur exactly once in
// its file (or function) as it is on disk, and still once when the edits
// before it in the same file are applied (edits must not overlap).
func apply(root string, m mutant) (map[string][]byte, error) {
	out := map[string][]byte{}
	for i, e := range m.Edits {
		if e.Func != "" {
			if err := applyInFunc(root, m, i, e, out); err != nil {
				return nil, err
			}
			continue
		}
		content, seen := out[e.File]
		if !seen {
			b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(e.File)))
			if err != nil {
				return nil, fmt.Errorf("%s: edit %d: %w", m.Name, i+1, err)
			}
			content = b
		}
		s := string(content)
		if n := strings.Count(s, e.Old); n != 1 {
			return nil, fmt.Errorf("%s: edit %d: %s: %w (found %d times): %s", m.Name, i+1, e.File, errStale, n, firstLine(e.Old))
		}
		out[e.File] = []byte(strings.Replace(s, e.Old, e.New, 1))
	}
	return out, nil
}

// applyInFunc applies edit i of m, anchored on a function, to out.
func applyInFunc(root string, m mutant, i int, e edit, out map[string][]byte) error {
	spans, err := findFunc(root, e.Dir, e.Func, out)
	if err != nil {
		return fmt.Errorf("%s: edit %d: %w", m.Name, i+1, err)
	}
	var hits []funcSpan
	found := 0
	for _, sp := range spans {
		content, ok := out[sp.file]
		if !ok {
			if content, err = os.ReadFile(filepath.Join(root, filepath.FromSlash(sp.file))); err != nil {
				return fmt.Errorf("%s: edit %d: %w", m.Name, i+1, err)
			}
		}
		n := strings.Count(string(content[sp.start:sp.end]), e.Old)
		found += n
		if n == 1 {
			sp.end = sp.start + strings.Index(string(content[sp.start:sp.end]), e.Old)
			hits = append(hits, sp)
			out[sp.file] = content
		}
	}
	switch {
	case len(spans) == 0:
		return fmt.Errorf("%s: edit %d: %s: %w (function %s not found)", m.Name, i+1, e.Dir, errStale, e.Func)
	case len(hits) != 1 || found != 1:
		return fmt.Errorf("%s: edit %d: %s %s: %w (found %d times): %s", m.Name, i+1, e.Dir, e.Func, errStale, found, firstLine(e.Old))
	}
	h := hits[0]
	c := out[h.file]
	mutated := make([]byte, 0, len(c)+len(e.New)-len(e.Old))
	mutated = append(append(append(mutated, c[:h.end]...), e.New...), c[h.end+len(e.Old):]...)
	out[h.file] = mutated
	return nil
}

// firstLine returns s's first non-blank line, trimmed, for messages.
func firstLine(s string) string {
	for line := range strings.Lines(s) {
		if t := strings.TrimSpace(line); t != "" {
			return fmt.Sprintf("%q", t)
		}
	}
	return `""`
}

// overlay is the file go build's -overlay flag reads.
type overlay struct {
	Replace map[string]string
}

// writeOverlay writes files (mutated contents keyed by their path relative
// to root) into dir, and an overlay.json there mapping each original
// file's absolute path to its mutated copy. It returns the overlay's
// path. The tree under root is not touched.
func writeOverlay(root, dir string, files map[string][]byte) (string, error) {
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	ov := overlay{Replace: map[string]string{}}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		// One subdirectory per file keeps its base name (go cares about
		// _test.go and build-constraint suffixes) without collisions.
		sub := filepath.Join(absDir, fmt.Sprint(i))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return "", err
		}
		copyPath := filepath.Join(sub, filepath.Base(filepath.FromSlash(name)))
		if err := os.WriteFile(copyPath, files[name], 0o644); err != nil {
			return "", err
		}
		ov.Replace[filepath.Join(absRoot, filepath.FromSlash(name))] = copyPath
	}
	data, err := json.MarshalIndent(ov, "", "\t")
	if err != nil {
		return "", err
	}
	path := filepath.Join(absDir, "overlay.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

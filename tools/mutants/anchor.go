package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// An edit anchored on a function ("func: stream (*session).step") names a
// package directory and a function or method in it, not a file: the old
// text must occur exactly once in that function's declaration, wherever
// the function lives in the package. Moving the function to another file,
// and changing the rest of the file, leave the mutant valid; renaming the
// function or rewriting the text itself makes it stale, as it should.

// funcName is how the list names fn: "f", "T.m" or "(*T).m" (type
// parameters dropped).
func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	t := fn.Recv.List[0].Type
	star := false
	if s, ok := t.(*ast.StarExpr); ok {
		star, t = true, s.X
	}
	switch x := t.(type) {
	case *ast.IndexExpr:
		t = x.X
	case *ast.IndexListExpr:
		t = x.X
	}
	id, _ := t.(*ast.Ident)
	if id == nil {
		return fn.Name.Name
	}
	if star {
		return "(*" + id.Name + ")." + fn.Name.Name
	}
	return id.Name + "." + fn.Name.Name
}

// funcSpan is where a function's declaration sits in a file's content.
type funcSpan struct {
	file       string // relative to the module root, with slashes
	start, end int    // byte offsets of the declaration, doc comment excluded
}

// findFunc returns the declarations of the function name in the Go
// files of dir (relative to root), reading a file from files when it is
// there (the edits before this one already applied) and from disk
// otherwise. Several are returned when build-tagged files each declare
// it.
func findFunc(root, dir, name string, files map[string][]byte) ([]funcSpan, error) {
	paths, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(dir), "*.go"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no Go file in %s", dir)
	}
	slices.Sort(paths)
	var out []funcSpan
	for _, p := range paths {
		rel := filepath.ToSlash(filepath.Join(dir, filepath.Base(p)))
		content, ok := files[rel]
		if !ok {
			if content, err = os.ReadFile(p); err != nil {
				return nil, err
			}
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, rel, content, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && funcName(fn) == name {
				out = append(out, funcSpan{rel, fset.Position(fn.Pos()).Offset, fset.Position(fn.End()).Offset})
			}
		}
	}
	return out, nil
}

// parseFuncAnchor splits a "func:" value, "<dir> <name>".
func parseFuncAnchor(val string) (dir, name string, err error) {
	f := strings.Fields(val)
	if len(f) != 2 || strings.HasPrefix(f[0], "/") || strings.Contains(f[0], "..") {
		return "", "", fmt.Errorf("func %q: want \"<package dir> <function>\", e.g. \"stream (*session).step\"", val)
	}
	return f[0], f[1], nil
}

// anchorList rewrites a mutant list so that every block anchored on a
// file whose old text lies inside one function (found once there, the
// function's name unique in its package) is anchored on that function
// instead. Comments, order and every other line are kept; blocks outside
// any function keep their "file:" line. It returns the new list and how
// many blocks it moved to a function.
func anchorList(root string, list string) (string, int, error) {
	var (
		out     strings.Builder
		file    string // the "file:" in force, not yet written
		written string // the anchor line last written for this mutant
		inBlock bool
		moved   int
	)
	lines := strings.Split(list, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case inBlock:
			if line == markEnd {
				inBlock = false
			}
		case strings.HasPrefix(line, "name:"):
			file, written = "", ""
		case strings.HasPrefix(line, "file:"):
			file = strings.TrimSpace(strings.TrimPrefix(line, "file:"))
			continue
		case strings.HasPrefix(line, "func:"):
			file, written = "", line
		case line == markOld:
			inBlock = true
			if file == "" {
				break
			}
			var old []string
			for j := i + 1; j < len(lines) && lines[j] != markNew; j++ {
				old = append(old, lines[j])
			}
			anchor := "file: " + file
			if fn, err := enclosingFunc(root, file, strings.Join(old, "\n")); err != nil {
				return "", 0, err
			} else if fn != "" {
				anchor = "func: " + fn
				moved++
			}
			if anchor != written {
				out.WriteString(anchor + "\n")
				written = anchor
			}
		}
		out.WriteString(line)
		if i < len(lines)-1 {
			out.WriteString("\n")
		}
	}
	return out.String(), moved, nil
}

// enclosingFunc returns "<dir> <function>" for the function of file
// holding old, when old occurs once in file, inside one function whose
// name no other declaration of the package shares; else "".
func enclosingFunc(root, file, old string) (string, error) {
	content, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
	if err != nil {
		return "", err
	}
	if strings.Count(string(content), old) != 1 {
		return "", nil
	}
	off := strings.Index(string(content), old)
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, content, parser.SkipObjectResolution)
	if err != nil {
		return "", err
	}
	dir := pathDir(file)
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fset.Position(fn.Pos()).Offset > off || fset.Position(fn.End()).Offset < off+len(old) {
			continue
		}
		spans, err := findFunc(root, dir, funcName(fn), nil)
		if err != nil || len(spans) != 1 {
			return "", err
		}
		return dir + " " + funcName(fn), nil
	}
	return "", nil
}

// pathDir is the directory of a slash-separated path.
func pathDir(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i]
	}
	return "."
}

package main

import (
	"strings"
	"testing"
)

func TestTailRejectsBadArguments(t *testing.T) {
	for _, args := range [][]string{{"tail"}, {"tail", "ftp://x"}, {"tail", "a", "b"}} {
		var out, errOut strings.Builder
		if err := run(t.Context(), args, func(string) string { return "" }, &out, &errOut); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}

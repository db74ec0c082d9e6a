package main

import (
	"context"
	"io"

	"changecast/cmd/internal/loadgen"
)

// runBench is `changecast bench`, the load generator in package loadgen:
// it loads a changecast server on this machine and checks what it
// measures (see README.md, "Load testing").
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return loadgen.Run(ctx, args, getenv, stdout, stderr)
}

package main

import (
	"context"
	"errors"
	"io"

	"changecast/internal/loadgen"
)

// runBench is `changecast bench`, the load generator in package loadgen:
// it loads a changecast server on this machine and checks what it
// measures (see README.md, "Load testing").
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	err := loadgen.Run(ctx, args, getenv, stdout, stderr)
	if ue, ok := errors.AsType[*loadgen.UsageError](err); ok {
		return &usageError{cmd: "bench", err: ue.Err}
	}
	return err
}

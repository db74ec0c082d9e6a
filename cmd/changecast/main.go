// Command changecast serves database changes as Server-Sent Events.
//
// Usage:
//
//	changecast [-dev] [-version]      run the server (configured by environment)
//	changecast token -sub alice ...   print a signed token for curl users
//	changecast tail URL               follow a stream and print its events
//	changecast bench [flags]          load a server on this machine (package loadgen)
//
// See README.md for the environment variables.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "changecast:", err)
		os.Exit(1)
	}
}

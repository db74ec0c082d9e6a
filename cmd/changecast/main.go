// Command changecast serves database changes as Server-Sent Events.
//
// Usage:
//
//	changecast [-dev]                 run the server (configured by environment)
//	changecast token -sub alice ...   print a signed token for curl users
//	changecast tail URL               follow a stream and print its events
//	changecast bench [flags]          load a server on this machine (package loadgen)
//	changecast backup -url U -o FILE  copy a running server's embedded store
//	changecast check FILE             check a store file offline
//	changecast help [COMMAND]         list the commands, flags and environment
//	changecast version                print the version and the commit
//
// See README.md for the environment variables.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

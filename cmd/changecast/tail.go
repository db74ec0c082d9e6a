package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"time"
)

// runTail follows a stream and prints each event as one line:
// "<event> <id> <data>". It resumes after a drop with the last id it saw,
// and stops on `expired` or when ctx ends.
func runTail(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("changecast tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	last := fs.String("last-event-id", "", "resume after this event id")
	token := fs.String("token", "", "bearer token (default $CHANGECAST_TOKEN)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: changecast tail [-last-event-id ID] [-token T] URL")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("tail needs exactly one URL")
	}
	u, err := url.Parse(fs.Arg(0))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("tail: %q is not an http(s) URL", fs.Arg(0))
	}
	tok := *token
	if tok == "" {
		tok = getenv("CHANGECAST_TOKEN")
	}
	o := followOptions{
		URL:         u.String(),
		LastEventID: *last,
		Header:      map[string]string{},
		OnReconnect: func(err error, wait time.Duration) {
			fmt.Fprintf(stderr, "tail: %v; reconnecting in %s\n", err, wait.Round(time.Millisecond))
		},
	}
	if tok != "" {
		o.Header["Authorization"] = "Bearer " + tok
	}
	return follow(ctx, o, func(ev sseEvent) error {
		if _, err := fmt.Fprintf(stdout, "%s %s %s\n", ev.Name, ev.ID, ev.Data); err != nil {
			return err
		}
		if ev.Name == "expired" {
			return errors.New("tail: the token expired")
		}
		return nil
	})
}

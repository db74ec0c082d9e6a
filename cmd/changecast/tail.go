package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"time"

	"changecast/internal/sseclient"
	"changecast/protocol"
)

// tailFlags are the tail command's flags.
type tailFlags struct{ last, token string }

// tailCommand returns the tail command's flags.
func tailCommand() (*command, *tailFlags) {
	var f tailFlags
	c := &command{
		name:     "tail",
		synopsis: "tail [-last-event-id ID] [-token T] URL",
		about: `Follow the stream at URL (such as http://127.0.0.1:8080/api/rooms/lobby/events)
and print each event on stdout as one line:

  <event> <id> <data>

such as "message 0000000000000007 {"topic":"rooms/lobby",...}". Events without
an id (reset, refused, expired) show "-" in the id column. Connections,
resumes, resets and reconnects are also told on stderr. tail reconnects by
itself with the last id it saw, and stops on a client error (4xx, with the
server's error text), on expired, or on Ctrl-C. The token is -token, else
$CHANGECAST_TOKEN.`,
		fs: flag.NewFlagSet("changecast tail", flag.ContinueOnError),
	}
	c.fs.StringVar(&f.last, "last-event-id", "", "resume after this event id")
	c.fs.StringVar(&f.token, "token", "", "bearer token (default $CHANGECAST_TOKEN)")
	return c, &f
}

// runTail follows a stream and prints each event as one line,
// "<event> <id> <data>" ("-" for no id). It resumes after a drop with the
// last id it saw, and stops on `expired` or when ctx ends.
func runTail(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, f := tailCommand()
	if err := c.parse(args, stdout); err != nil {
		return err
	}
	if c.fs.NArg() != 1 {
		return usagef("tail", "tail needs exactly one URL, got %d arguments", c.fs.NArg())
	}
	u, err := url.Parse(c.fs.Arg(0))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("tail", "%q is not an http(s) URL", c.fs.Arg(0))
	}
	tok := f.token
	if tok == "" {
		tok = getenv("CHANGECAST_TOKEN")
	}
	o := sseclient.Options{
		URL:         u.String(),
		LastEventID: f.last,
		Header:      map[string]string{},
		OnConnect: func(lastID string) {
			if lastID == "" {
				fmt.Fprintf(stderr, "tail: connected to %s; from now (a snapshot first)\n", u.Redacted())
			} else {
				fmt.Fprintf(stderr, "tail: connected to %s; resuming after id %s\n", u.Redacted(), lastID)
			}
		},
		OnReconnect: func(err error, wait time.Duration) {
			fmt.Fprintf(stderr, "tail: %v; reconnecting in %s\n", err, wait.Round(time.Millisecond))
		},
	}
	if tok != "" {
		o.Header["Authorization"] = "Bearer " + tok
	}
	return sseclient.Follow(ctx, o, func(ev sseclient.Event) error {
		id := ev.ID
		if !protocol.EventName(ev.Name).HasID() || id == "" {
			id = "-"
		}
		if _, err := fmt.Fprintf(stdout, "%s %s %s\n", ev.Name, id, ev.Data); err != nil {
			return err
		}
		var d protocol.Payload
		_ = json.Unmarshal(ev.Data, &d)
		switch protocol.EventName(ev.Name) {
		case protocol.EventReset:
			fmt.Fprintf(stderr, "tail: %s: reset (%s): the id could not be resumed; a fresh snapshot follows\n", d.Topic, d.Reason)
		case protocol.EventRefused:
			fmt.Fprintf(stderr, "tail: %s: refused: %s\n", d.Topic, d.Error)
		case protocol.EventExpired:
			return errors.New("tail: the token expired")
		}
		return nil
	})
}

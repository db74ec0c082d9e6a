// Package sseclient follows a changecast stream (or any Server-Sent
// Events stream) with the r3labs/sse client: it reconnects with the last
// id it saw, with exponential backoff, and stops on a client error. The
// tail command and the end-to-end tests use it.
package sseclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"

	"changecast/store"
)

// maxEventSize bounds one SSE event the client accepts: the largest the
// server sends, the orders board's snapshot of store.SnapshotActiveOrders
// orders of the largest size (about 16 MiB). r3labs/sse's default of
// 64 KiB is below even a room snapshot of 50 messages of 4,000
// characters. The buffer grows to it only for an event that needs it.
const maxEventSize = store.SnapshotActiveOrders*maxOrderJSON + 64<<10

// maxOrderJSON bounds one order's JSON: store.MaxItems items and a
// customer of store.MaxNameLen bytes each, which JSON may write as 6
// bytes a byte ("<" is \u003c), and room for the rest.
const maxOrderJSON = (store.MaxItems+1)*(6*store.MaxNameLen+64) + 4<<10

// reconnectMax caps the wait between reconnect attempts.
const reconnectMax = 10 * time.Second

// Event is one event as a follower sees it.
type Event struct {
	ID   string
	Name string
	Data []byte
}

// Options configure Follow.
type Options struct {
	// URL is the stream to follow.
	URL string
	// LastEventID resumes after that id on the first connection.
	LastEventID string
	// Header is added to every request (Authorization, say).
	Header map[string]string
	// Client makes the requests; nil uses a client of its own.
	Client *http.Client
	// OnReconnect, if set, is told of each failed attempt before the wait.
	OnReconnect func(err error, wait time.Duration)
	// OnConnect, if set, is told of each accepted connection, with the id
	// it resumes after ("" for none).
	OnConnect func(lastID string)
}

// ErrStop, returned by a Follow callback, ends Follow with a nil error.
var ErrStop = errors.New("stop following")

// Follow reads the SSE stream at o.URL with the r3labs/sse client and calls
// fn with each event until ctx ends (then it returns nil), fn returns an
// error (ErrStop ends with nil; any other is returned), or the server
// answers with a client error such as 401 or 404 (returned). Dropped
// connections, server errors and clean ends of the stream all reconnect
// with the last id seen, with exponential backoff that never gives up.
// Comments and retry-only blocks are not passed to fn.
func Follow(ctx context.Context, o Options, fn func(Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	httpc := o.Client
	if httpc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		defer tr.CloseIdleConnections()
		httpc = &http.Client{Transport: tr}
	}
	c := sse.NewClient(o.URL, sse.ClientMaxBufferSize(maxEventSize))
	c.Connection = httpc
	for k, v := range o.Header {
		c.Headers[k] = v
	}
	if o.LastEventID != "" {
		c.LastEventID.Store([]byte(o.LastEventID))
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 250 * time.Millisecond
	bo.MaxInterval = reconnectMax
	bo.MaxElapsedTime = 0 // never give up; ctx ends it
	c.ReconnectStrategy = backoff.WithContext(bo, ctx)
	c.ReconnectNotify = o.OnReconnect
	c.ResponseValidator = func(c *sse.Client, resp *http.Response) error {
		if err := validateStream(c, resp); err != nil {
			return err
		}
		if o.OnConnect != nil {
			last, _ := c.LastEventID.Load().([]byte)
			o.OnConnect(string(last))
		}
		return nil
	}

	var stopErr error
	handler := func(m *sse.Event) {
		if stopErr != nil || (len(m.Event) == 0 && len(m.Data) == 0) {
			return
		}
		err := fn(Event{ID: string(m.ID), Name: string(m.Event), Data: append([]byte(nil), m.Data...)})
		if err != nil {
			stopErr = err
			cancel()
		}
	}
	for {
		err := c.SubscribeRawWithContext(ctx, handler)
		switch {
		case stopErr != nil:
			if errors.Is(stopErr, ErrStop) {
				return nil
			}
			return stopErr
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		}
		// A clean end of the stream (the server shut down or dropped a slow
		// reader): reconnect with the last id after a pause.
		bo.Reset()
		t := time.NewTimer(bo.InitialInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// validateStream accepts a 200 text/event-stream answer. A client error
// (4xx but 408 and 429) is permanent; anything else is retried. It closes
// the body of any answer it rejects; the error carries the body's JSON
// "error" text when there is one.
func validateStream(_ *sse.Client, resp *http.Response) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode == http.StatusOK && mt == "text/event-stream" {
		return nil
	}
	var body struct {
		Error string `json:"error"`
	}
	if mt == "application/json" {
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	}
	resp.Body.Close()
	err := fmt.Errorf("stream answered %s (%s)", resp.Status, resp.Header.Get("Content-Type"))
	if body.Error != "" {
		err = fmt.Errorf("stream answered %s: %s", resp.Status, body.Error)
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
		return backoff.Permanent(err)
	}
	return err
}

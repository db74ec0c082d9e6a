//go:build !linux

package main

import (
	"context"
	"errors"
	"io"
)

// benchPoll is the epoll reader, which needs Linux.
type benchPoll struct{}

func newBenchPoll(*bencher) (*benchPoll, error) {
	return nil, errors.New("bench: -reader epoll needs Linux; use -reader goroutine")
}

func (*benchPoll) close() {}

func (b *bencher) connectLoop(ctx context.Context, s *benchStream, h benchHandler, first bool, done func()) {
	defer done()
	b.follow(ctx, s, h)
}

// benchRaiseFileLimit does nothing here: the limit is raised on Linux.
func benchRaiseFileLimit(io.Writer) {}

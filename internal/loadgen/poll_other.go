//go:build !linux

package loadgen

import (
	"context"
	"errors"
	"io"
)

// pollSet is the epoll reader, which needs Linux.
type pollSet struct{}

func newPollSet(*bencher) (*pollSet, error) {
	return nil, errors.New("bench: -reader epoll needs Linux; use -reader goroutine")
}

func (*pollSet) close() {}

func (b *bencher) connectLoop(ctx context.Context, s *stream, h handler, first bool, done func()) {
	defer done()
	b.follow(ctx, s, h)
}

// raiseFileLimit does nothing here: the limit is raised on Linux.
func raiseFileLimit(io.Writer) {}

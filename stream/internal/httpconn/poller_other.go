//go:build !linux

package httpconn

import "errors"

// Poller is Linux's epoll; elsewhere each connection is read on a
// goroutine of its own (TakeOver with a nil Poller).
type Poller struct{}

// NewPoller fails outside Linux.
func NewPoller() (*Poller, error) { return nil, errors.ErrUnsupported }

// Close does nothing.
func (p *Poller) Close() {}

// Watching returns 0.
func (p *Poller) Watching() int { return 0 }

func (p *Poller) watch(*Conn) error { return errors.ErrUnsupported }
func (p *Poller) forget(*Conn)      {}

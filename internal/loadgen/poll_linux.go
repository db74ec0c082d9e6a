//go:build linux

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The epoll reader (-reader epoll): after the handshake, a stream's
// socket leaves Go's network poller (its descriptor is duplicated and the
// net.Conn closed) and joins one of a few epoll loops, one per core. A
// loop waits for readable sockets (level-triggered), reads each once into
// its one buffer and feeds the stream's decoder: one read per event, and
// no goroutine to wake, where a goroutine per connection makes two reads
// (the second finds the socket empty) and a park and wake-up per event.

const (
	// pollBuf is an epoll loop's read buffer, shared by its streams.
	pollBuf = 64 << 10
	// pollEvents is how many ready sockets one epoll_wait returns.
	pollEvents = 512
	// pollWaitMs bounds an epoll_wait, so that streams whose context
	// ended are closed within this many milliseconds.
	pollWaitMs = 50
)

// pollSet is the set of epoll loops of one run.
type pollSet struct {
	b       *bencher
	loops   []*pollLoop
	next    atomic.Uint32
	byFD    []atomic.Pointer[liveStream]
	wg      sync.WaitGroup
	stopped atomic.Bool
}

// pollLoop is one epoll loop: its goroutine alone reads and closes
// its streams.
type pollLoop struct {
	p    *pollSet
	epfd int

	mu    sync.Mutex
	kills []*liveStream // streams whose context ended
	live  map[*liveStream]struct{}
}

// liveStream is a stream whose socket an epoll loop reads.
type liveStream struct {
	ctx  context.Context
	s    *stream
	h    handler
	fd   int
	loop *pollLoop
	done func()      // ends the stream's life
	stop func() bool // stops the kill on ctx end
}

// newPollSet starts one epoll loop per core, with room for descriptors
// up to the open-file limit.
func newPollSet(b *bencher) (*pollSet, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	p := &pollSet{b: b, byFD: make([]atomic.Pointer[liveStream], min(l.Cur, 1<<22)+64)}
	for range max(1, runtime.GOMAXPROCS(0)) {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("bench: epoll: %w", err)
		}
		loop := &pollLoop{p: p, epfd: epfd, live: make(map[*liveStream]struct{})}
		p.loops = append(p.loops, loop)
		p.wg.Go(loop.run)
	}
	return p, nil
}

// close stops the loops, ends the streams they still hold and waits.
func (p *pollSet) close() {
	p.stopped.Store(true)
	p.wg.Wait()
	for _, loop := range p.loops {
		syscall.Close(loop.epfd)
	}
}

// connectLoop connects s (after a backoff unless first) until a socket
// is handed to an epoll loop; done is called when s's life ends.
func (b *bencher) connectLoop(ctx context.Context, s *stream, h handler, first bool, done func()) {
	for ; ; first = false {
		if !first && !b.backoff(ctx, s) {
			done()
			return
		}
		conn, err := b.handshake(ctx, s, h)
		if err == nil {
			var fd int
			if fd, err = detach(conn); err == nil {
				if err = b.poll.add(ctx, s, h, fd, done); err == nil {
					return
				}
			}
			b.open.Add(-1)
		}
		if ctx.Err() != nil || errors.Is(err, errStop) {
			done()
			return
		}
		b.reconnects.Add(1)
		if err != nil && !errors.Is(err, io.EOF) {
			b.fail(err)
		}
	}
}

// detach takes the socket out of Go's network poller: it returns a
// duplicate of conn's descriptor (non-blocking, as Go left it) and
// closes conn.
func detach(conn net.Conn) (int, error) {
	defer conn.Close()
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return -1, errors.New("bench: not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) {
		fd, derr = syscall.Dup(int(f))
		if derr == nil {
			syscall.CloseOnExec(fd)
		}
	}); err != nil {
		return -1, err
	}
	return fd, derr
}

// add hands a connected socket to the next epoll loop.
func (p *pollSet) add(ctx context.Context, s *stream, h handler, fd int, done func()) error {
	loop := p.loops[p.next.Add(1)%uint32(len(p.loops))]
	l := &liveStream{ctx: ctx, s: s, h: h, fd: fd, loop: loop, done: done}
	fail := func(err error) error {
		syscall.Close(fd)
		return err
	}
	if fd >= len(p.byFD) {
		return fail(fmt.Errorf("bench: descriptor %d past the open-file limit", fd))
	}
	loop.mu.Lock()
	defer loop.mu.Unlock()
	if p.stopped.Load() {
		return fail(errors.New("bench: epoll loops stopped"))
	}
	p.byFD[fd].Store(l)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(loop.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.byFD[fd].Store(nil)
		return fail(fmt.Errorf("bench: epoll_ctl: %w", err))
	}
	loop.live[l] = struct{}{}
	l.stop = context.AfterFunc(ctx, func() {
		loop.mu.Lock()
		loop.kills = append(loop.kills, l)
		loop.mu.Unlock()
	})
	return nil
}

// run is the loop's goroutine.
func (loop *pollLoop) run() {
	p, b := loop.p, loop.p.b
	events := make([]syscall.EpollEvent, pollEvents)
	buf := make([]byte, pollBuf)
	for {
		n, err := syscall.EpollWait(loop.epfd, events, pollWaitMs)
		if n > 0 && n < len(events) && b.cfg.Coalesce > 0 {
			// Let more sockets become readable: one epoll_wait for many.
			time.Sleep(b.cfg.Coalesce)
			n, err = syscall.EpollWait(loop.epfd, events, 0)
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			b.fail(fmt.Errorf("epoll_wait: %w", err))
		}
		for _, ev := range events[:max(n, 0)] {
			l := p.byFD[ev.Fd].Load()
			if l == nil || l.loop != loop {
				continue
			}
			r, err := syscall.Read(l.fd, buf)
			switch {
			case r > 0:
				if ferr := b.feed(l.s, l.h, buf[:r]); ferr != nil {
					loop.end(l, ferr)
				}
			case r == 0:
				loop.end(l, io.EOF)
			case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
			default:
				loop.end(l, fmt.Errorf("stream %s: %w", l.s.room, err))
			}
		}
		loop.mu.Lock()
		kills := loop.kills
		loop.kills = nil
		loop.mu.Unlock()
		for _, l := range kills {
			if p.byFD[l.fd].Load() == l {
				loop.end(l, l.ctx.Err())
			}
		}
		if p.stopped.Load() {
			loop.mu.Lock()
			rest := make([]*liveStream, 0, len(loop.live))
			for l := range loop.live {
				rest = append(rest, l)
			}
			loop.mu.Unlock()
			for _, l := range rest {
				loop.end(l, context.Canceled)
			}
			return
		}
	}
}

// end closes a stream's socket; the stream then reconnects in a new
// goroutine (which carries on its life), unless it was stopped or its
// context ended.
func (loop *pollLoop) end(l *liveStream, err error) {
	p, b := loop.p, loop.p.b
	_ = syscall.EpollCtl(loop.epfd, syscall.EPOLL_CTL_DEL, l.fd, nil)
	p.byFD[l.fd].Store(nil)
	syscall.Close(l.fd)
	loop.mu.Lock()
	delete(loop.live, l)
	loop.mu.Unlock()
	l.stop()
	b.open.Add(-1)
	if errors.Is(err, errStop) || l.ctx.Err() != nil || p.stopped.Load() {
		l.done()
		return
	}
	b.reconnects.Add(1)
	if !errors.Is(err, io.EOF) {
		b.fail(err)
	}
	go b.connectLoop(l.ctx, l.s, l.h, false, l.done) // owned by the stream's life (done)
}

// raiseFileLimit raises the open-file limit to its hard limit: each
// stream is a file descriptor.
func raiseFileLimit(log io.Writer) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			fmt.Fprintf(log, "bench: raising the open-file limit: %v\n", err)
		}
	}
}

package httpconn

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

// Poller notices when the clients of many taken-over connections hang up,
// with one epoll instance and one goroutine, instead of a goroutine
// blocked in Read on each connection. Its goroutine waits for the epoll
// instance through Go's own netpoller (the instance is itself a
// descriptor that becomes readable when one of its connections has an
// event), so it holds no thread while nothing happens.
type Poller struct {
	ep   *os.File
	rc   syscall.RawConn
	done chan struct{} // closed when run has returned

	mu     sync.Mutex
	conns  map[int32]*Conn // by the key in their epoll registration
	next   int32
	failed bool // run has stopped: no connection is watched any more
}

// pollEvents are the events a connection is watched for: the client
// closed its side or the connection failed (a client sends nothing after
// its request; what it does send is read and dropped). Edge-triggered: an
// event is reported once, and the connection is read until empty then.
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | 1<<31 // EPOLLET

// NewPoller starts a Poller. It fails if the epoll instance cannot be
// waited for through Go's netpoller; the caller then reads each
// connection on a goroutine of its own (TakeOver with a nil Poller).
func NewPoller() (*Poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(fd), "epoll")
	// A File that Go's netpoller could not take answers deadlines with
	// an error: it would block a thread in every wait.
	if err := ep.SetReadDeadline(time.Time{}); err != nil {
		ep.Close()
		return nil, err
	}
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, err
	}
	p := &Poller{ep: ep, rc: rc, done: make(chan struct{}), conns: make(map[int32]*Conn)}
	go p.run()
	return p, nil
}

// Close stops watching every connection and waits for the Poller's
// goroutine; no hang-up is reported afterwards. It may be called more
// than once.
func (p *Poller) Close() {
	_ = p.ep.Close()
	<-p.done
}

// Watching returns how many connections p watches.
func (p *Poller) Watching() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// watch starts watching c; c.hangUp is called when its client hangs up.
func (p *Poller) watch(c *Conn) error {
	if c.gw.rc == nil {
		return errors.New("httpconn: the connection has no descriptor to watch")
	}
	p.mu.Lock()
	if p.failed {
		p.mu.Unlock()
		return errors.New("httpconn: the poller has stopped")
	}
	for {
		p.next++
		if _, used := p.conns[p.next]; !used {
			break
		}
	}
	key := p.next
	p.conns[key] = c
	p.mu.Unlock()
	var err error
	cerr := c.gw.rc.Control(func(fd uintptr) {
		p.ctl(func(ep int) {
			err = syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, int(fd), &syscall.EpollEvent{Events: pollEvents, Fd: key})
		})
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.mu.Lock()
		delete(p.conns, key)
		p.mu.Unlock()
		return os.NewSyscallError("epoll_ctl", err)
	}
	c.poller, c.pollKey = p, key
	return nil
}

// forget stops watching c; it must be called before c's connection is
// closed.
func (p *Poller) forget(c *Conn) {
	_ = c.gw.rc.Control(func(fd uintptr) {
		p.ctl(func(ep int) {
			_ = syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
	})
	p.mu.Lock()
	if p.conns[c.pollKey] == c {
		delete(p.conns, c.pollKey)
	}
	p.mu.Unlock()
}

// ctl runs fn with the epoll descriptor, unless the Poller is closed.
func (p *Poller) ctl(fn func(ep int)) {
	_ = p.rc.Control(func(ep uintptr) { fn(int(ep)) })
}

// run reads events until the Poller closes. rc.Read calls its function
// again each time Go's netpoller finds the epoll instance readable. If
// waiting fails, every connection watched is reported hung up (its
// response ends and its client reconnects) rather than left unwatched,
// and later connections get a goroutine of their own.
func (p *Poller) run() {
	defer close(p.done)
	defer p.fail()
	events := make([]syscall.EpollEvent, 256)
	_ = p.rc.Read(func(ep uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(ep), events, 0)
			switch {
			case err == syscall.EINTR:
				continue
			case err != nil:
				return true
			case n == 0:
				return false // wait until the instance is readable
			}
			for _, ev := range events[:n] {
				p.mu.Lock()
				c := p.conns[ev.Fd]
				p.mu.Unlock()
				if c != nil && c.drainInput(ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0) {
					p.hungUp(ev.Fd, c)
				}
			}
		}
	})
}

// hungUp reports c's client gone, unless c was forgotten meanwhile: under
// p.mu, so that once forget has returned gone is not called.
func (p *Poller) hungUp(key int32, c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[key] == c {
		delete(p.conns, key)
		c.hangUp()
	}
}

// fail stops watching: every connection watched is reported hung up.
func (p *Poller) fail() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed = true
	for key, c := range p.conns {
		delete(p.conns, key)
		c.hangUp()
	}
}

// drainInput reads and drops what the client sent, without waiting; it
// reports whether the client has hung up (hup says epoll said so).
func (c *Conn) drainInput(hup bool) bool {
	var buf [512]byte
	_ = c.gw.rc.Read(func(fd uintptr) bool {
		for !hup {
			n, err := syscall.Read(int(fd), buf[:])
			switch {
			case err == syscall.EINTR:
			case err == syscall.EAGAIN:
				return true
			case err != nil || n == 0:
				hup = true
			}
		}
		return true
	})
	return hup
}

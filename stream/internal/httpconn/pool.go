package httpconn

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pool runs the live part of many responses on a few goroutines instead
// of one goroutine each. A response is a Task: Wake queues it (once,
// however often it is woken before it runs), a worker runs it, and a Task
// woken while it runs is run again afterwards. So one Task never runs on
// two workers at once, and waking costs a queue append, not a goroutine
// switch: a fan-out that wakes a thousand responses wakes the workers
// once, and they write one response after the other.
//
// A Task must not block: writes to its connection go through a Conn made
// non-blocking with SetNonblocking, which keeps what the client cannot
// take yet and wakes the Task when it has been written.
type Pool struct {
	mu     sync.Mutex
	queue  []*Task // tasks to run, oldest first
	head   int     // queue[head:] is still to run
	closed bool
	kick   chan struct{} // a task was queued; capacity 1
	wg     sync.WaitGroup
}

// Task is one response's work in a Pool: Run is called on a worker each
// time it was woken. The zero value is not usable: set Run.
type Task struct {
	Run   func()
	state atomic.Int32
}

// A Task's state moves idle → queued → running → idle; a wake while it
// runs moves it to again, and the worker queues it once more.
const (
	taskIdle int32 = iota
	taskQueued
	taskRunning
	taskAgain
)

// NewPool starts a Pool of n workers (at least one).
func NewPool(n int) *Pool {
	p := &Pool{kick: make(chan struct{}, 1)}
	for range max(n, 1) {
		p.wg.Go(p.work)
	}
	return p
}

// Wake makes t run on a worker soon. It may be called from any
// goroutine, also from t's own Run; after Close it does nothing.
func (p *Pool) Wake(t *Task) {
	for {
		switch s := t.state.Load(); s {
		case taskQueued, taskAgain:
			return
		case taskRunning:
			if t.state.CompareAndSwap(s, taskAgain) {
				return
			}
		case taskIdle:
			if t.state.CompareAndSwap(s, taskQueued) {
				p.push(t)
				return
			}
		}
	}
}

func (p *Pool) push(t *Task) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.queue = append(p.queue, t)
	p.kickLocked()
	p.mu.Unlock()
}

// kickLocked wakes a worker waiting for a task, if none is about to
// wake. Called under p.mu, which Close takes to close kick.
func (p *Pool) kickLocked() {
	if p.closed {
		return // kick is closed: every worker wakes
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// pop returns the next task, or nil when none is queued, and whether the
// pool is closed.
func (p *Pool) pop() (*Task, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head == len(p.queue) {
		// Empty: start the array over, and let go of one that a burst
		// made large.
		if cap(p.queue) > 4096 {
			p.queue = nil
		} else {
			clear(p.queue)
			p.queue = p.queue[:0]
		}
		p.head = 0
		return nil, p.closed
	}
	t := p.queue[p.head]
	p.queue[p.head] = nil
	p.head++
	if p.head >= 1024 && 2*p.head >= len(p.queue) {
		// A queue that never empties (a saturated machine) would
		// otherwise grow for good: move what is left to the front.
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue, p.head = p.queue[:n], 0
	}
	if p.head < len(p.queue) {
		// More are queued: another worker may take them meanwhile.
		p.kickLocked()
	}
	return t, false
}

// yieldAfter is how long a worker runs tasks before it yields to the
// scheduler. A worker that always finds work never blocks; to Go's
// scheduler it then looks like a goroutine that hogs its P, which it
// preempts every 10 ms and whose P it takes away in the middle of a
// write, keeping the scheduler's monitor waking every 20 µs. Yielding
// well before that costs little, and yielding seldom keeps delivery
// ahead of new writes when the machine is saturated: the goroutines that
// accept writes wait for a yield like everyone else, as they would wait
// behind a goroutine per stream.
const yieldAfter = 2 * time.Millisecond

func (p *Pool) work() {
	since := time.Now()
	for {
		if time.Since(since) >= yieldAfter {
			runtime.Gosched()
			since = time.Now()
		}
		t, closed := p.pop()
		if t == nil {
			if closed {
				return
			}
			<-p.kick
			since = time.Now()
			continue
		}
		t.state.Store(taskRunning)
		t.Run()
		if !t.state.CompareAndSwap(taskRunning, taskIdle) {
			// Woken while it ran.
			t.state.Store(taskQueued)
			p.push(t)
		}
	}
}

// Close stops the workers once the tasks queued have run, and waits for
// them. Tasks woken afterwards do not run. It may be called more than
// once.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.kick)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

package httpconn

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// TestPoolRunsAfterEveryWake: tasks woken from many goroutines at once
// each run on one worker at a time, and a task runs after its last wake,
// so no wake is lost: each Run records the wakes it saw, and once all is
// quiet every task's last Run saw all of its wakes.
func TestPoolRunsAfterEveryWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPool(4)
		defer p.Close()
		type counted struct {
			Task
			woken   atomic.Int64 // wakes asked
			seen    atomic.Int64 // wakes the last Run started after
			running atomic.Int32
			runs    atomic.Int64
		}
		tasks := make([]*counted, 50)
		var overlap atomic.Bool
		for i := range tasks {
			c := &counted{}
			c.Run = func() {
				if c.running.Add(1) != 1 {
					overlap.Store(true)
				}
				c.seen.Store(c.woken.Load())
				c.runs.Add(1)
				c.running.Add(-1)
			}
			tasks[i] = c
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := range 2000 {
					c := tasks[i%len(tasks)]
					c.woken.Add(1)
					p.Wake(&c.Task)
				}
			})
		}
		wg.Wait()
		synctest.Wait()
		if overlap.Load() {
			t.Error("a task ran on two workers at once")
		}
		for i, c := range tasks {
			if c.seen.Load() != c.woken.Load() {
				t.Errorf("task %d: woken %d times, its last run saw %d wakes", i, c.woken.Load(), c.seen.Load())
			}
			if c.runs.Load() == 0 || c.runs.Load() > c.woken.Load() {
				t.Errorf("task %d ran %d times for %d wakes", i, c.runs.Load(), c.woken.Load())
			}
		}
	})
}

// TestPoolWakeFromRun: a task that wakes itself while it runs runs again,
// and a wake after Close runs nothing.
func TestPoolWakeFromRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPool(2)
		var task Task
		runs := 0
		task.Run = func() {
			runs++
			if runs < 5 {
				p.Wake(&task)
			}
		}
		p.Wake(&task)
		synctest.Wait()
		if runs != 5 {
			t.Fatalf("ran %d times, want 5", runs)
		}
		p.Close()
		var late Task
		late.Run = func() { t.Error("a task woken after Close ran") }
		p.Wake(&late)
	})
}

// TestPoolQueueStaysBounded: a queue that never empties, because each
// task wakes another as it runs, keeps an array the size of what waits,
// not of everything ever queued.
func TestPoolQueueStaysBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPool(1)
		defer p.Close()
		tasks := make([]Task, 100)
		runs, most := 0, 0
		for i := range tasks {
			tasks[i].Run = func() {
				p.mu.Lock()
				most = max(most, cap(p.queue))
				p.mu.Unlock()
				if runs++; runs < 100_000 {
					p.Wake(&tasks[(i+1)%len(tasks)])
				}
			}
		}
		for i := range tasks {
			p.Wake(&tasks[i])
		}
		synctest.Wait()
		if runs < 100_000 {
			t.Fatalf("%d runs, want 100000", runs)
		}
		if most > 8192 {
			t.Fatalf("with at most 100 tasks queued, the queue's array grew to %d", most)
		}
	})
}

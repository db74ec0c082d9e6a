package stream

import (
	"changecast/protocol"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fakeSource is an in-memory change log with positions "%016x" of a
// sequence number, history that can be pruned, and a live feed.
type fakeSource struct {
	mu       sync.Mutex
	log      []Event
	pruned   int // events with seq <= pruned are gone
	notify   chan struct{}
	catchUps int
	follows  int
	// gate, when not nil, holds the feed back until it is closed.
	gate chan struct{}
	// broken, when closed, makes the running Follow return brokenErr.
	broken    chan struct{}
	brokenErr error
	// forgotten positions pass CheckPosition but CatchUp cannot resume
	// them (like MongoDB's "resume token not found").
	forgotten map[string]bool
	// foreign makes CheckPosition accept a well-formed position beyond
	// the log, as MongoDB's does for a token of another cluster.
	foreign bool
}

// breakFeed makes the running Follow return err, as a dropped connection
// to the database would.
func (f *fakeSource) breakFeed(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.brokenErr = err
	close(f.broken)
	f.broken = make(chan struct{})
}

func (f *fakeSource) followCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.follows
}

// hold stops the feed from delivering new events until the returned
// function is called.
func (f *fakeSource) hold() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := make(chan struct{})
	f.gate = g
	return func() {
		f.mu.Lock()
		f.gate = nil
		f.mu.Unlock()
		close(g)
	}
}

func newFakeSource() *fakeSource {
	return &fakeSource{notify: make(chan struct{}), broken: make(chan struct{}), forgotten: map[string]bool{}}
}

func fakePos(seq int) string { return fmt.Sprintf("%016x", seq) }

func fakeSeq(pos string) (int, bool) {
	if len(pos) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(pos, 16, 64)
	return int(n), err == nil
}

// add appends an event on topic and wakes followers.
func (f *fakeSource) add(topic, text string) Event {
	return f.addAlso(topic, nil, text)
}

// addAlso appends an event on topic that is also delivered on the topics
// also, and wakes followers.
func (f *fakeSource) addAlso(topic string, also []string, text string) Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	seq := len(f.log) + 1
	data, _ := json.Marshal(map[string]any{"topic": topic, "text": text, "seq": seq})
	ev := Event{ID: fakePos(seq), Topic: topic, Also: also, Name: "message", Data: data, Time: time.Now()}
	f.log = append(f.log, ev)
	close(f.notify)
	f.notify = make(chan struct{})
	return ev
}

// prune forgets every event up to seq.
func (f *fakeSource) prune(seq int) {
	f.mu.Lock()
	f.pruned = max(f.pruned, seq)
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeSource) Head(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakePos(len(f.log)), nil
}

func (f *fakeSource) check(pos string) (int, error) {
	seq, ok := fakeSeq(pos)
	if !ok || seq > len(f.log) {
		return 0, fmt.Errorf("position %q: %w", pos, ErrInvalidPosition)
	}
	if seq < f.pruned {
		return 0, fmt.Errorf("position %q: %w", pos, ErrHistoryLost)
	}
	return seq, nil
}

func (f *fakeSource) Follow(ctx context.Context, after string, fn func(Batch) error) error {
	f.mu.Lock()
	f.follows++
	seq, err := f.check(after)
	broken := f.broken
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if err := fn(Batch{Checkpoint: after}); err != nil {
		return err
	}
	for {
		f.mu.Lock()
		if seq < f.pruned {
			f.mu.Unlock()
			return fmt.Errorf("feed at %d: %w", seq, ErrHistoryLost)
		}
		evs := slices.Clone(f.log[seq:])
		wait, gate := f.notify, f.gate
		f.mu.Unlock()
		if gate != nil && len(evs) > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-gate:
			}
			continue
		}
		if len(evs) > 0 {
			seq += len(evs)
			if err := fn(Batch{Events: evs, Checkpoint: fakePos(seq)}); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-broken:
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.brokenErr
		case <-wait:
		}
	}
}

func (f *fakeSource) CatchUp(ctx context.Context, topics []string, after, until string, fn func(Event) error) error {
	f.mu.Lock()
	f.catchUps++
	seq, err := f.check(after)
	if err == nil && f.forgotten[after] {
		err = fmt.Errorf("resume token %s not found: %w", after, ErrInvalidPosition)
	}
	hi, _ := fakeSeq(until)
	evs := slices.Clone(f.log[seq:min(hi, len(f.log))])
	f.mu.Unlock()
	if err != nil {
		return err
	}
	for _, ev := range evs {
		if onTopics(ev, topics) {
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// Snapshot's data counts the topic's events up to its position, so a test
// can tell whether snapshot and live events line up.
func (f *fakeSource) Snapshot(_ context.Context, topics []string) ([]Event, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pos := fakePos(len(f.log))
	var out []Event
	for _, t := range topics {
		n := 0
		for _, ev := range f.log {
			if onTopics(ev, []string{t}) {
				n++
			}
		}
		data, _ := json.Marshal(map[string]any{"topic": t, "count": n})
		out = append(out, Event{ID: pos, Topic: t, Name: protocol.EventSnapshot, Data: data})
	}
	return out, pos, nil
}

// ComparePositions: fake positions are fixed-width hex, in order as strings.
func (f *fakeSource) ComparePositions(a, b string) int { return strings.Compare(a, b) }

func (f *fakeSource) CheckPosition(pos string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq, ok := fakeSeq(pos); ok && f.foreign && seq > len(f.log) {
		return nil
	}
	_, err := f.check(pos)
	if err != nil && !isInvalid(err) {
		return nil // history is not CheckPosition's business
	}
	return err
}

func (f *fakeSource) catchUpCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.catchUps
}

// onTopics reports whether ev is delivered on one of topics: its Topic
// or one of its Also.
func onTopics(ev Event, topics []string) bool {
	if slices.Contains(topics, ev.Topic) {
		return true
	}
	for _, t := range ev.Also {
		if slices.Contains(topics, t) {
			return true
		}
	}
	return false
}

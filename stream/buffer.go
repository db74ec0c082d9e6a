package stream

import (
	"container/list"
	"slices"
)

// compare compares positions a and b in log order, through the Source
// (positions need not order as strings); "", no position, comes before
// every position.
func (m *Multiplexer) compare(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return -1
	case b == "":
		return 1
	}
	return m.src.ComparePositions(a, b)
}

// ring keeps a topic's most recent frames. It holds every frame of its
// topic with a position after since.
type ring struct {
	topic  string
	frames []*frame // oldest first, at most cap
	since  string
	elem   *list.Element
}

// bufferLocked appends f to the ring of each of its topics, making and
// evicting rings as needed. f's bytes count once in the budget however
// many rings hold it.
func (m *Multiplexer) bufferLocked(f *frame) {
	m.ringLocked(f.topic, f)
	for _, t := range f.also {
		m.ringLocked(t, f)
	}
	for m.bufBytes > m.cfg.BufferBytes && m.lru.Len() > 0 {
		old := m.lru.Front().Value.(*ring)
		if len(old.frames) <= 1 {
			m.evictLocked(old)
		} else {
			m.popLocked(old)
		}
	}
}

// ringLocked appends f to topic's ring.
func (m *Multiplexer) ringLocked(topic string, f *frame) {
	r := m.rings[topic]
	if r == nil {
		r = &ring{topic: topic, since: m.floor, frames: make([]*frame, 0, 4)}
		r.elem = m.lru.PushBack(r)
		m.rings[topic] = r
		for len(m.rings) > m.cfg.MaxTopics {
			m.evictLocked(m.lru.Front().Value.(*ring))
		}
	} else {
		m.lru.MoveToBack(r.elem)
	}
	if len(r.frames) == m.cfg.TopicBuffer {
		m.popLocked(r)
	}
	r.frames = append(r.frames, f)
	if f.rings++; f.rings == 1 {
		m.bufBytes += len(f.wire)
	}
}

// releaseLocked forgets that one ring holds f; the last one gives its bytes
// back to the budget.
func (m *Multiplexer) releaseLocked(f *frame) {
	if f.rings--; f.rings == 0 {
		m.bufBytes -= len(f.wire)
	}
}

// popLocked forgets r's oldest frame: r is then complete after it.
func (m *Multiplexer) popLocked(r *ring) {
	old := r.frames[0]
	r.since = old.id
	r.frames[0] = nil
	r.frames = r.frames[1:]
	m.releaseLocked(old)
}

// evictLocked forgets r entirely; topics without a ring are then complete
// only after its newest frame.
func (m *Multiplexer) evictLocked(r *ring) {
	m.lru.Remove(r.elem)
	delete(m.rings, r.topic)
	if n := len(r.frames); n > 0 && m.compare(r.frames[n-1].id, m.floor) > 0 {
		m.floor = r.frames[n-1].id
	} else if m.compare(r.since, m.floor) > 0 {
		m.floor = r.since
	}
	for _, f := range r.frames {
		m.releaseLocked(f)
	}
}

// replay returns the buffered frames of topics with after < id <= until
// in log order, and false if memory does not hold all of them.
func (m *Multiplexer) replay(topics []string, after, until string) ([]*frame, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Each ring is in log order: its frames in range are one run.
	runs := make([][]*frame, 0, len(topics))
	n := 0
	for _, t := range topics {
		r := m.rings[t]
		if r == nil {
			if m.compare(after, m.floor) < 0 {
				return nil, false
			}
			continue
		}
		if m.compare(after, r.since) < 0 {
			return nil, false
		}
		run := r.frames[m.firstAfter(r.frames, after):m.firstAfter(r.frames, until)]
		runs = append(runs, run)
		n += len(run)
	}
	out := make([]*frame, 0, n)
	for _, run := range runs {
		out = append(out, run...)
	}
	if len(runs) > 1 {
		// A frame on several of topics is in several runs: keep it once.
		slices.SortFunc(out, func(a, b *frame) int { return m.compare(a.id, b.id) })
		out = slices.CompactFunc(out, func(a, b *frame) bool { return a.id == b.id })
	}
	return out, true
}

// firstAfter returns the index of the first of frames, which are in log
// order, whose position is after pos.
func (m *Multiplexer) firstAfter(frames []*frame, pos string) int {
	i, found := slices.BinarySearchFunc(frames, pos, func(f *frame, pos string) int { return m.compare(f.id, pos) })
	if found {
		i++
	}
	return i
}

package stream

import "sync"

// subscriber is one stream's registration. Its queue is a slice that
// holds only what is pending, so an idle subscriber costs little; notify
// tells the stream that frames came or that the subscriber was dropped.
type subscriber struct {
	topics []string
	user   string // counted present on its presence topics
	class  string // counted under it in Stats
	// notify, if set, is called when the queue stops being empty and when
	// the subscriber is dropped. It must not block: it runs under the
	// multiplexer's lock.
	notify func()

	mu   sync.Mutex
	q    []*frame // pending frames, oldest first
	done bool     // dropped: no frame follows those in q

	// reason and closed are set under the multiplexer's lock, before done.
	reason EndReason
	closed bool
	// pushed is the last frame fanned out to s, under the multiplexer's
	// lock: a frame on several of s's topics is queued once.
	pushed *frame
}

// push queues f; it returns false, queueing nothing, when max frames are
// pending. Called under the multiplexer's lock.
func (s *subscriber) push(f *frame, max int) bool {
	s.mu.Lock()
	n := len(s.q)
	if n >= max {
		s.mu.Unlock()
		return false
	}
	s.q = append(s.q, f)
	s.mu.Unlock()
	if n == 0 {
		s.signal()
	}
	return true
}

func (s *subscriber) signal() {
	if s.notify != nil {
		s.notify()
	}
}

// shrink lets go of the queue's array if nothing is pending.
func (s *subscriber) shrink() {
	s.mu.Lock()
	if len(s.q) == 0 {
		s.q = nil
	}
	s.mu.Unlock()
}

// take returns the pending frames, leaving spare (emptied) as the queue,
// and whether the subscriber was dropped after them.
func (s *subscriber) take(spare []*frame) ([]*frame, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.q
	s.q = spare[:0]
	return q, s.done
}

// dropLocked unregisters s and marks its queue done (once), recording why.
func (m *Multiplexer) dropLocked(s *subscriber, reason EndReason) {
	if s.closed {
		return
	}
	s.closed, s.reason = true, reason
	for _, t := range s.topics {
		if set := m.subs[t]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(m.subs, t)
			}
		}
	}
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.signal()
}

// subscribe registers a subscriber on topics and returns it with the
// feed's position at registration: every event after that position will
// reach its queue. It returns nil if the multiplexer is closed.
func (m *Multiplexer) subscribe(topics []string) (*subscriber, string) {
	return m.subscribeAs(topics, "", nil)
}

// subscribeAs is subscribe for a user, who (if not "") is counted
// present on the presence topics among topics until unsubscribe, with
// notify as the subscriber's.
func (m *Multiplexer) subscribeAs(topics []string, user string, notify func()) (*subscriber, string) {
	s := &subscriber{topics: topics, user: user, notify: notify}
	if m.cfg.Classify != nil {
		s.class = m.cfg.Classify(topics)
	}
	m.hit(fpSubscribe, topics)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ""
	}
	for _, t := range topics {
		set := m.subs[t]
		if set == nil {
			set = make(map[*subscriber]struct{})
			m.subs[t] = set
		}
		set[s] = struct{}{}
	}
	m.joinLocked(user, topics)
	m.classes[s.class]++
	return s, m.last
}

// unsubscribe removes s if it is still registered, and stops counting
// it in Stats.
func (m *Multiplexer) unsubscribe(s *subscriber) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropLocked(s, "")
	m.leaveLocked(s.user, s.topics)
	m.classes[s.class]--
	if m.classes[s.class] == 0 {
		delete(m.classes, s.class)
	}
}

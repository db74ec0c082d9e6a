package stream

// Registration: a stream's subscriber joins the fan-out of its topics
// (and presence counts its user) until it is dropped or unsubscribed.
// The subscriber and its queue are in deliver.go.

// dropLocked unregisters s and marks its queue done (once), recording why.
func (m *Multiplexer) dropLocked(s *subscriber, reason EndReason) {
	if s.closed {
		return
	}
	s.closed, s.reason = true, reason
	m.detachLocked(s, s.topics)
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.signal()
}

// detachLocked takes s out of the fan-out of topics.
func (m *Multiplexer) detachLocked(s *subscriber, topics []string) {
	for _, t := range topics {
		if set := m.subs[t]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(m.subs, t)
			}
		}
	}
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
	if m.closed {
		m.mu.Unlock()
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
	m.classes[s.class]++
	head := m.last
	m.mu.Unlock()
	// After registering: the join reaches this subscriber's queue too,
	// behind the sync its stream writes, which skips it.
	m.presence.join(user, topics)
	return s, head
}

// unsubscribe removes s if it is still registered, and stops counting
// it in Stats.
func (m *Multiplexer) unsubscribe(s *subscriber) {
	m.mu.Lock()
	m.dropLocked(s, "")
	m.classes[s.class]--
	if m.classes[s.class] == 0 {
		delete(m.classes, s.class)
	}
	topics := s.topics // those left (withdraw.go) are gone from it
	m.mu.Unlock()
	m.presence.leave(s.user, topics)
}

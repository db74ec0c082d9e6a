package stream

import (
	"changecast/protocol"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// PresenceGrace is how long a user stays present on a topic after the
// last of their streams on it closed: a reconnect (a dropped connection,
// a page reload, a deploy's retry of 1 to 5 s) comes back well within
// it, so it does not show as a leave and a join.
const PresenceGrace = 5 * time.Second

// presenceEntry is one user of this process on a topic: the streams they
// have open on it and, once none is left, the grace timer.
type presenceEntry struct {
	since   time.Time
	streams int
	timer   *time.Timer // running while streams == 0
}

// presenceTopic is who is on one topic: this process's users and those
// other processes reported (SetRemotePresence). A user is present when
// in either.
type presenceTopic struct {
	local  map[string]*presenceEntry
	remote map[string]time.Time
}

func (pt *presenceTopic) has(user string) bool {
	if _, ok := pt.local[user]; ok {
		return true
	}
	_, ok := pt.remote[user]
	return ok
}

func (pt *presenceTopic) empty() bool { return len(pt.local) == 0 && len(pt.remote) == 0 }

// tracksPresence reports whether topic tracks presence.
func (m *Multiplexer) tracksPresence(topic string) bool {
	return m.cfg.Presence != nil && m.cfg.Presence(topic)
}

// presenceTopicLocked returns topic's presence, creating it.
func (m *Multiplexer) presenceTopicLocked(topic string) *presenceTopic {
	pt := m.presence[topic]
	if pt == nil {
		pt = &presenceTopic{local: make(map[string]*presenceEntry), remote: make(map[string]time.Time)}
		if m.presence == nil {
			m.presence = make(map[string]*presenceTopic)
		}
		m.presence[topic] = pt
	}
	return pt
}

// joinLocked counts one more stream of user on the presence topics among
// topics, announcing a user who was not present.
func (m *Multiplexer) joinLocked(user string, topics []string) {
	if user == "" || m.cfg.Presence == nil {
		return
	}
	for _, t := range topics {
		if !m.tracksPresence(t) {
			continue
		}
		pt := m.presenceTopicLocked(t)
		if e := pt.local[user]; e != nil {
			e.streams++
			if e.timer != nil {
				e.timer.Stop()
				e.timer = nil
			}
			continue
		}
		was := pt.has(user)
		pt.local[user] = &presenceEntry{since: time.Now(), streams: 1}
		if !was {
			m.announceLocked(t, protocol.PresenceOpJoin, user)
		}
	}
}

// leaveLocked counts one stream of user less on the presence topics among
// topics; a user left without streams leaves after PresenceGrace unless
// a stream of theirs comes back first.
func (m *Multiplexer) leaveLocked(user string, topics []string) {
	if user == "" || m.cfg.Presence == nil {
		return
	}
	for _, t := range topics {
		pt := m.presence[t]
		if pt == nil {
			continue
		}
		e := pt.local[user]
		if e == nil || e.streams == 0 {
			continue
		}
		e.streams--
		if e.streams > 0 || m.closed {
			continue
		}
		e.timer = time.AfterFunc(PresenceGrace, func() { m.expire(t, user, e) })
	}
}

// expire ends the grace of e, user's entry on topic, if it still runs.
func (m *Multiplexer) expire(topic, user string, e *presenceEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pt := m.presence[topic]
	if m.closed || pt == nil || pt.local[user] != e || e.streams > 0 || e.timer == nil {
		return
	}
	e.timer = nil
	delete(pt.local, user)
	if !pt.has(user) {
		m.announceLocked(topic, protocol.PresenceOpLeave, user)
	}
	if pt.empty() {
		delete(m.presence, topic)
	}
}

// stopPresenceLocked stops every grace timer (Close).
func (m *Multiplexer) stopPresenceLocked() {
	for _, pt := range m.presence {
		for _, e := range pt.local {
			if e.timer != nil {
				e.timer.Stop()
				e.timer = nil
			}
		}
	}
}

// announceLocked queues a join or leave for topic's subscribers, behind
// what they have pending, without an id.
func (m *Multiplexer) announceLocked(topic string, op protocol.PresenceOp, user string) {
	data, _ := json.Marshal(protocol.PresenceChange{Topic: topic, Op: op, User: user})
	wire, err := AppendEvent(nil, "", string(protocol.EventPresence), data)
	if err != nil {
		return
	}
	m.presenceSeq++
	f := &frame{topic: topic, wire: wire, pseq: m.presenceSeq}
	for s := range m.subs[topic] {
		if !s.push(f, m.cfg.QueueSize) {
			m.dropLocked(s, EndSlow)
			m.droppedSlow.Add(1)
		}
	}
}

// membersLocked returns who is on topic, by user.
func (m *Multiplexer) membersLocked(topic string) []protocol.Member {
	pt := m.presence[topic]
	if pt == nil {
		return []protocol.Member{}
	}
	out := make([]protocol.Member, 0, len(pt.local)+len(pt.remote))
	for u, e := range pt.local {
		since := e.since
		if r, ok := pt.remote[u]; ok && r.Before(since) {
			since = r
		}
		out = append(out, protocol.Member{User: u, Since: since})
	}
	for u, since := range pt.remote {
		if _, ok := pt.local[u]; !ok {
			out = append(out, protocol.Member{User: u, Since: since})
		}
	}
	slices.SortFunc(out, func(a, b protocol.Member) int { return strings.Compare(a.User, b.User) })
	return out
}

// Presence returns the users present on topic (in this process or, as
// last reported by SetRemotePresence, in others), ordered by user.
func (m *Multiplexer) Presence(topic string) []protocol.Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.membersLocked(topic)
}

// LocalPresence returns the users with a stream open in this process (or
// within their grace), by topic: what this process tells the others.
func (m *Multiplexer) LocalPresence() map[string][]protocol.Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]protocol.Member)
	for t, pt := range m.presence {
		for u, e := range pt.local {
			out[t] = append(out[t], protocol.Member{User: u, Since: e.since})
		}
	}
	return out
}

// SetRemotePresence replaces the users other processes have present, by
// topic, announcing who joins and who leaves as a result.
func (m *Multiplexer) SetRemotePresence(remote map[string][]protocol.Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for t, pt := range m.presence {
		var keep map[string]bool
		if ms, ok := remote[t]; ok {
			keep = make(map[string]bool, len(ms))
			for _, mb := range ms {
				keep[mb.User] = true
			}
		}
		for u := range pt.remote {
			if !keep[u] {
				delete(pt.remote, u)
				if !pt.has(u) {
					m.announceLocked(t, protocol.PresenceOpLeave, u)
				}
			}
		}
		if pt.empty() {
			delete(m.presence, t)
		}
	}
	for t, ms := range remote {
		for _, mb := range ms {
			if mb.User == "" {
				continue
			}
			pt := m.presenceTopicLocked(t)
			was := pt.has(mb.User)
			if old, ok := pt.remote[mb.User]; !ok || mb.Since.Before(old) {
				pt.remote[mb.User] = mb.Since
			}
			if !was {
				m.announceLocked(t, protocol.PresenceOpJoin, mb.User)
			}
		}
	}
}

// presenceSync adds a sync event for each presence topic among topics to
// sw and returns the announcement sequence it reflects: announcements up
// to it, still queued, are skipped.
func (m *Multiplexer) presenceSync(sw *streamWriter, topics []string) uint64 {
	if m.cfg.Presence == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range topics {
		if !m.tracksPresence(t) {
			continue
		}
		data, _ := json.Marshal(protocol.PresenceSync{Topic: t, Op: protocol.PresenceOpSync, Users: m.membersLocked(t)})
		_ = sw.encode("", protocol.EventPresence, data)
	}
	return m.presenceSeq
}

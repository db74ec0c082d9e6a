package stream

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"changecast/protocol"
)

// PresenceGrace is how long a user stays present on a topic after the
// last of their streams on it closed: a reconnect (a dropped connection,
// a page reload, a deploy's retry of 1 to 5 s) comes back well within
// it, so it does not show as a leave and a join.
const PresenceGrace = 5 * time.Second

// presence is who is on each presence topic (Config.Presence): this
// process's users, counted by their open streams, and those other
// processes reported. It is apart from the fan-out: it has its own lock,
// and reaches the streams through one hook, inject, which queues an
// id-less frame for a topic's subscribers behind what they have pending,
// numbered by presence's own sequence. A stream writes a sync of the
// topics it carries (sync), then skips the announcements up to the
// sequence that sync reflects.
//
// Lock order: presence.mu, then the Multiplexer's (inside inject); never
// the other way. The grace timers take presence.mu alone.
type presence struct {
	tracks func(topic string) bool
	// inject queues wire, with sequence seq, for topic's subscribers.
	inject func(topic string, wire []byte, seq uint64)

	mu     sync.Mutex
	topics map[string]*presenceTopic
	seq    uint64 // announcements made
	closed bool
}

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

// newPresence returns presence over the topics tracks accepts (nil: none),
// announcing through inject.
func newPresence(tracks func(string) bool, inject func(string, []byte, uint64)) *presence {
	return &presence{tracks: tracks, inject: inject, topics: make(map[string]*presenceTopic)}
}

func (p *presence) tracked(topic string) bool { return p.tracks != nil && p.tracks(topic) }

// topicLocked returns topic's presence, creating it.
func (p *presence) topicLocked(topic string) *presenceTopic {
	pt := p.topics[topic]
	if pt == nil {
		pt = &presenceTopic{local: make(map[string]*presenceEntry), remote: make(map[string]time.Time)}
		p.topics[topic] = pt
	}
	return pt
}

// join counts one more stream of user on the presence topics among
// topics, announcing a user who was not present.
func (p *presence) join(user string, topics []string) {
	if user == "" || p.tracks == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for _, t := range topics {
		if !p.tracked(t) {
			continue
		}
		pt := p.topicLocked(t)
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
			p.announceLocked(t, protocol.PresenceOpJoin, user)
		}
	}
}

// leave counts one stream of user less on the presence topics among
// topics; a user left without streams leaves after PresenceGrace unless
// a stream of theirs comes back first.
func (p *presence) leave(user string, topics []string) {
	if user == "" || p.tracks == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for _, t := range topics {
		pt := p.topics[t]
		if pt == nil {
			continue
		}
		e := pt.local[user]
		if e == nil || e.streams == 0 {
			continue
		}
		e.streams--
		if e.streams > 0 {
			continue
		}
		e.timer = time.AfterFunc(PresenceGrace, func() { p.expire(t, user, e) })
	}
}

// expire ends the grace of e, user's entry on topic, if it still runs.
func (p *presence) expire(topic, user string, e *presenceEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pt := p.topics[topic]
	if p.closed || pt == nil || pt.local[user] != e || e.streams > 0 || e.timer == nil {
		return
	}
	e.timer = nil
	delete(pt.local, user)
	if !pt.has(user) {
		p.announceLocked(topic, protocol.PresenceOpLeave, user)
	}
	if pt.empty() {
		delete(p.topics, topic)
	}
}

// close stops every grace timer and every later change (Close).
func (p *presence) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, pt := range p.topics {
		for _, e := range pt.local {
			if e.timer != nil {
				e.timer.Stop()
				e.timer = nil
			}
		}
	}
}

// announceLocked hands a join or leave on topic to inject.
func (p *presence) announceLocked(topic string, op protocol.PresenceOp, user string) {
	wire, err := AppendEvent(nil, "", string(protocol.EventPresence), jsonData(protocol.PresenceChange{Topic: topic, Op: op, User: user}))
	if err != nil {
		return
	}
	p.seq++
	p.inject(topic, wire, p.seq)
}

// membersLocked returns who is on topic, by user.
func (p *presence) membersLocked(topic string) []protocol.Member {
	pt := p.topics[topic]
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

// sync returns the data of a sync event for each presence topic among
// topics, and the announcement sequence they reflect: announcements up
// to it, still queued, are to be skipped.
func (p *presence) sync(topics []string) ([][]byte, uint64) {
	if p.tracks == nil {
		return nil, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out [][]byte
	for _, t := range topics {
		if p.tracked(t) {
			out = append(out, jsonData(protocol.PresenceSync{Topic: t, Op: protocol.PresenceOpSync, Users: p.membersLocked(t)}))
		}
	}
	return out, p.seq
}

// Presence returns the users present on topic (in this process or, as
// last reported by SetRemotePresence, in others), ordered by user.
func (m *Multiplexer) Presence(topic string) []protocol.Member {
	p := m.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.membersLocked(topic)
}

// LocalPresence returns the users with a stream open in this process (or
// within their grace), by topic: what this process tells the others.
func (m *Multiplexer) LocalPresence() map[string][]protocol.Member {
	p := m.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]protocol.Member)
	for t, pt := range p.topics {
		for u, e := range pt.local {
			out[t] = append(out[t], protocol.Member{User: u, Since: e.since})
		}
	}
	return out
}

// SetRemotePresence replaces the users other processes have present, by
// topic, announcing who joins and who leaves as a result.
func (m *Multiplexer) SetRemotePresence(remote map[string][]protocol.Member) {
	p := m.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for t, pt := range p.topics {
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
					p.announceLocked(t, protocol.PresenceOpLeave, u)
				}
			}
		}
		if pt.empty() {
			delete(p.topics, t)
		}
	}
	for t, ms := range remote {
		for _, mb := range ms {
			if mb.User == "" {
				continue
			}
			pt := p.topicLocked(t)
			was := pt.has(mb.User)
			if old, ok := pt.remote[mb.User]; !ok || mb.Since.Before(old) {
				pt.remote[mb.User] = mb.Since
			}
			if !was {
				p.announceLocked(t, protocol.PresenceOpJoin, mb.User)
			}
		}
	}
}

// inject queues wire, an id-less frame numbered seq by its injector, for
// topic's subscribers behind what they have pending: the one hook by
// which something beside the feed reaches the streams.
func (m *Multiplexer) inject(topic string, wire []byte, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := &frame{topic: topic, wire: wire, seq: seq}
	for s := range m.subs[topic] {
		if !s.push(f, m.cfg.QueueSize) {
			m.dropLocked(s, EndSlow)
			m.droppedSlow.Add(1)
		}
	}
}

// jsonData encodes the data of an event the stream makes itself: one of
// protocol's payload types, which always encode.
func jsonData(v any) []byte {
	data, _ := json.Marshal(v)
	return data
}

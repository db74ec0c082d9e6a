package stream

import (
	"maps"
	"time"
)

// Stats is a point-in-time view of a Multiplexer, for metrics.
type Stats struct {
	// OpenStreams counts responses being served.
	OpenStreams int64
	// Subscribers counts the streams subscribed to the feed.
	Subscribers int64
	// SubscribersByClass counts them by the class Config.Classify gave
	// their topics; a class without subscribers is absent. The map is
	// the caller's.
	SubscribersByClass map[string]int64
	// Delivered counts events (snapshots and resets included) whose bytes
	// the client's socket took, counted per flush.
	Delivered uint64
	// Backlogged counts events written to streams but still waiting, in
	// their connection's backlog, for a client that does not read them
	// yet; they move to Delivered when the socket takes them.
	Backlogged int64
	// DroppedSlow counts subscribers disconnected because their queue was full.
	DroppedSlow uint64
	// CatchUpsRunning counts catch-ups reading the Source now.
	CatchUpsRunning int64
	// CatchUps counts catch-ups from the Source since start.
	CatchUps uint64
	// LastEventTime is the commit time of the newest event off the feed
	// (zero before the first).
	LastEventTime time.Time
	// Topics counts topics with an in-memory buffer.
	Topics int
	// BufferedBytes is the size of the encoded events they hold.
	BufferedBytes int
	// Ready reports whether the feed is running.
	Ready bool
	// Applied is the feed's position: every change up to it has been
	// handed to the subscribers ("" before Start).
	Applied string
}

// Stats returns the Multiplexer's counters. It is safe for concurrent
// use.
func (m *Multiplexer) Stats() Stats {
	m.mu.Lock()
	st := Stats{
		SubscribersByClass: maps.Clone(m.classes),
		Topics:             len(m.rings),
		BufferedBytes:      m.bufBytes,
		Ready:              m.ready,
		Applied:            m.last,
	}
	m.mu.Unlock()
	for _, n := range st.SubscribersByClass {
		st.Subscribers += n
	}
	st.OpenStreams = m.openStreams.Load()
	st.Delivered = m.delivered.Load()
	st.Backlogged = m.backlogged.Load()
	st.DroppedSlow = m.droppedSlow.Load()
	st.CatchUpsRunning = m.catchUpsRunning.Load()
	st.CatchUps = m.catchUpsTotal.Load()
	if n := m.lastEventNanos.Load(); n != 0 {
		st.LastEventTime = time.Unix(0, n)
	}
	return st
}

package stream

// Failpoints the checker in package stream_test holds goroutines at.
const (
	FailApply     = fpApply
	FailSubscribe = fpSubscribe
	FailBegin     = fpBegin
	FailReplay    = fpReplay
	FailHandover  = fpHandover
)

// SetFailpoint makes m call fn at each failpoint, with the topics of the
// stream that reached it (none for FailApply). Call it before Start.
func SetFailpoint(m *Multiplexer, fn func(at string, topics []string)) { m.failpoint = fn }

// FeedPosition returns the position m's feed has applied.
func FeedPosition(m *Multiplexer) string { return m.lastPos() }

package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"changecast/protocol"
	"changecast/store"
	"changecast/stream"
)

// RoomAuth is the app's backend, asked whether a user may use a room
// their token does not list. Its zero value is off: the token's rooms
// are all a user may use.
//
// changecast POSTs {"sub","room","action"} (action "read" or "post") to
// URL, with Authorization: Bearer <Secret> when Secret is set, and
// allows only a 2xx answer whose body is a JSON object with "allowed":
// true (a JSON true, not "true"). Anything else refuses: an explicit
// no, another 2xx body or a 4xx is a no (403); no answer within Timeout,
// a refused connection, a 5xx or a 429 is "cannot tell now" (503 with
// Retry-After), never a yes.
type RoomAuth struct {
	// URL is where the questions are POSTed.
	URL string
	// Secret, when set, is sent as a bearer token with each question.
	Secret string
	// Cache is how long an answer, yes or no, is kept per (sub, room,
	// action), and how often a live stream's rooms that the backend
	// granted are asked about again; 0: DefaultRoomAuthCache.
	Cache time.Duration
	// Timeout bounds one question, the wait for a free slot included;
	// 0: DefaultRoomAuthTimeout.
	Timeout time.Duration
	// MaxCalls bounds the questions in flight at once; 0:
	// DefaultRoomAuthCalls.
	MaxCalls int
	// MaxCallsPerSub bounds the questions about one sub in flight at
	// once: a question past it is "cannot tell now" at once, for that
	// sub alone, and takes none of MaxCalls. 0: DefaultRoomAuthCallsPerSub;
	// at most MaxCalls.
	MaxCallsPerSub int
	// Client asks; nil: a client of its own.
	Client *http.Client
}

// Defaults of RoomAuth's zero fields.
const (
	// DefaultRoomAuthCache: a membership change (a user removed from a
	// room) reaches open streams within twice this, and a flood of
	// requests of one user for one room costs one question per this.
	DefaultRoomAuthCache = 15 * time.Second
	// DefaultRoomAuthTimeout is far above a healthy backend's answer
	// time and short enough for a client to retry soon.
	DefaultRoomAuthTimeout = 2 * time.Second
	// DefaultRoomAuthCalls bounds the questions in flight: at 20 ms an
	// answer, 800 a second, while a flood of subscriptions keeps at most
	// 16 of the backend's connections busy.
	DefaultRoomAuthCalls = 16
	// DefaultRoomAuthCallsPerSub bounds one user's questions in flight,
	// so one token asking about many rooms cannot take every slot from
	// the others: 4 asks the rooms of one /api/events request 4 at a
	// time.
	DefaultRoomAuthCallsPerSub = 4
)

// On reports whether the backend is asked.
func (r RoomAuth) On() bool { return r.URL != "" }

// roomAction is what a user wants to do in a room: the question's
// "action".
type roomAction string

// The actions.
const (
	// roomRead: read its messages, stream it, see who is there.
	roomRead roomAction = "read"
	// roomPost: post a message.
	roomPost roomAction = "post"
)

// roomVerdict is an answer of the backend. The zero value refuses.
type roomVerdict uint8

const (
	// roomDenied: the backend said no, or something other than yes.
	roomDenied roomVerdict = iota
	// roomAllowed: the backend said yes.
	roomAllowed
	// roomUnavailable: the backend could not be asked (down, slow, a
	// 5xx): refused for now; a retry may be allowed.
	roomUnavailable
)

// Reply details of the backend hook.
const (
	// roomUnavailableFor is how long a "cannot tell" is kept: short, so
	// a backend back up is asked again at once, and long enough that a
	// flood during an outage costs a question a second per (sub, room,
	// action).
	roomUnavailableFor = time.Second
	// roomRetryAfter is the Retry-After, in seconds, of a 503 for a
	// backend that could not be asked.
	roomRetryAfter = 5
	// maxRoomAnswer bounds the answer body read: {"allowed":true} is 16
	// bytes.
	maxRoomAnswer = 4 << 10
	// roomUnknownGrace is how many Cache periods an open stream keeps a
	// room the backend granted while the backend cannot be asked.
	roomUnknownGrace = 2
	// roomSweepMin is the least number of answers kept before the
	// expired ones are swept out.
	roomSweepMin = 1024
)

// roomKey is what an answer is kept under.
type roomKey struct {
	sub, room string
	action    roomAction
}

// roomAnswer is a kept answer.
type roomAnswer struct {
	verdict roomVerdict
	until   time.Time
}

// roomQuestion is the body POSTed to the backend.
type roomQuestion struct {
	Sub    string     `json:"sub"`
	Room   string     `json:"room"`
	Action roomAction `json:"action"`
}

// roomAsker asks the backend and keeps its answers. It is safe for
// concurrent use.
type roomAsker struct {
	cfg    RoomAuth
	ctx    context.Context // the server's: a question outlives its request, not the server
	client *http.Client
	now    func() time.Time
	log    *slog.Logger
	slots  chan struct{}   // one per question in flight
	perSub *subjectCounter // questions in flight per sub
	calls  singleflight.Group

	mu      sync.Mutex
	answers map[roomKey]roomAnswer
	sweepAt int // sweep the expired answers when this many are kept
}

func newRoomAsker(ctx context.Context, cfg RoomAuth, now func() time.Time, log *slog.Logger) *roomAsker {
	if cfg.Cache <= 0 {
		cfg.Cache = DefaultRoomAuthCache
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRoomAuthTimeout
	}
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = DefaultRoomAuthCalls
	}
	if cfg.MaxCallsPerSub <= 0 {
		cfg.MaxCallsPerSub = DefaultRoomAuthCallsPerSub
	}
	cfg.MaxCallsPerSub = min(cfg.MaxCallsPerSub, cfg.MaxCalls)
	client := cfg.Client
	if client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = cfg.MaxCalls // one kept per slot
		// A redirect is an answer, not a yes: never followed (nor the
		// secret sent elsewhere).
		client = &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &roomAsker{
		cfg: cfg, ctx: ctx, client: client, now: now, log: log,
		slots:   make(chan struct{}, cfg.MaxCalls),
		perSub:  newSubjectCounter(cfg.MaxCallsPerSub),
		answers: make(map[roomKey]roomAnswer),
		sweepAt: roomSweepMin,
	}
}

// ask returns the backend's answer for sub doing action in room: a kept
// one if it is fresh, else a new one. Identical questions at once share
// one call. A question past sub's MaxCallsPerSub is roomUnavailable at
// once, and not kept. When ctx ends first (the client went, or its
// deadline passed) it returns roomUnavailable; the call goes on, within
// Timeout, for the others.
func (a *roomAsker) ask(ctx context.Context, sub, room string, action roomAction) roomVerdict {
	k := roomKey{sub: sub, room: room, action: action}
	a.mu.Lock()
	ans, ok := a.answers[k]
	a.mu.Unlock()
	if ok && a.now().Before(ans.until) {
		return ans.verdict
	}
	// No control character is in a subject or a room: NUL separates.
	ch := a.calls.DoChan(string(action)+"\x00"+room+"\x00"+sub, func() (any, error) {
		if !a.perSub.acquire(sub) {
			return roomUnavailable, nil
		}
		defer a.perSub.release(sub)
		v := a.call(k)
		a.keep(k, v)
		return v, nil
	})
	select {
	case r := <-ch:
		return r.Val.(roomVerdict)
	case <-ctx.Done():
		return roomUnavailable
	}
}

// keep keeps v for k: Cache long, or roomUnavailableFor for a "cannot
// tell". It sweeps out the expired answers whenever the map has doubled
// since the last sweep, so it holds about the answers of one Cache.
func (a *roomAsker) keep(k roomKey, v roomVerdict) {
	d := a.cfg.Cache
	if v == roomUnavailable {
		d = min(d, roomUnavailableFor)
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.answers) >= a.sweepAt {
		for k, ans := range a.answers {
			if !now.Before(ans.until) {
				delete(a.answers, k)
			}
		}
		a.sweepAt = max(roomSweepMin, 2*len(a.answers))
	}
	a.answers[k] = roomAnswer{verdict: v, until: now.Add(d)}
}

// call asks the backend once, within Timeout, waiting for a free slot
// first. What is not a yes or a no is logged (never the secret).
func (a *roomAsker) call(k roomKey) roomVerdict {
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.Timeout)
	defer cancel()
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	case <-ctx.Done():
		a.log.Warn("room auth: no free slot to ask the backend in time", "room", k.room, "action", string(k.action), "slots", cap(a.slots))
		return roomUnavailable
	}
	status, body, err := a.post(ctx, k)
	if err != nil {
		a.log.Warn("room auth: the backend could not be asked", "room", k.room, "action", string(k.action), "err", err)
		return roomUnavailable
	}
	v, err := roomVerdictOf(status, body)
	if err != nil {
		a.log.Warn("room auth: the backend answered neither yes nor no", "room", k.room, "action", string(k.action), "status", status, "err", err)
	}
	return v
}

// post sends the question and returns the answer's status and body.
func (a *roomAsker) post(ctx context.Context, k roomKey) (int, []byte, error) {
	q, err := json.Marshal(roomQuestion{Sub: k.sub, Room: k.room, Action: k.action})
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.URL, bytes.NewReader(q))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if a.cfg.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+a.cfg.Secret)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRoomAnswer))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, body, nil
}

// roomVerdictOf reads the backend's answer, failing closed: only a 2xx
// whose body is a JSON object with "allowed": true (a JSON true; the key
// spelled so, once) allows, and only "allowed": false is a plain no. A
// 5xx or 429 is roomUnavailable (the backend failed: a retry may be
// answered); anything else is roomDenied. The error says what was
// neither yes nor no.
func roomVerdictOf(status int, body []byte) (roomVerdict, error) {
	switch {
	case status >= 500 || status == http.StatusTooManyRequests:
		return roomUnavailable, fmt.Errorf("status %d", status)
	case status/100 != 2:
		return roomDenied, fmt.Errorf("status %d is not 2xx", status)
	}
	// A map: its keys match exactly ("Allowed" is not "allowed").
	var ans map[string]json.RawMessage
	if err := json.Unmarshal(body, &ans); err != nil {
		return roomDenied, fmt.Errorf("the body is not a JSON object: %w", err)
	}
	if err := strictKeys(body, nil); err != nil {
		return roomDenied, err // a key given twice: which one counts?
	}
	switch string(ans["allowed"]) {
	case "true":
		return roomAllowed, nil
	case "false":
		return roomDenied, nil
	}
	return roomDenied, errors.New(`"allowed" is not true or false`)
}

// retryAfter sets the Retry-After of a 503 for a backend that could not
// be asked.
func retryAfter(h http.Header) {
	h.Set("Retry-After", strconv.Itoa(roomRetryAfter))
}

// roomGrant is whether a principal may use a room, and who says so.
type roomGrant uint8

const (
	// grantRefused: the token does not list the room, and the backend,
	// if there is one, did not say yes.
	grantRefused roomGrant = iota
	// grantToken: the token lists the room (or "*").
	grantToken
	// grantBackend: the backend said yes; a live stream asks again.
	grantBackend
	// grantUnknown: the backend could not be asked; refused for now, a
	// retry may be allowed (503).
	grantUnknown
)

// ok reports whether g allows.
func (g roomGrant) ok() bool { return g == grantToken || g == grantBackend }

// refusal returns the status and message that refuse room for g.
func (g roomGrant) refusal(room string) (int, string) {
	if g == grantUnknown {
		return http.StatusServiceUnavailable, msgRoomAuthDown
	}
	return http.StatusForbidden, msgRoomNotGranted(room)
}

// msgRoomAuthDown answers a room the backend could not be asked about.
const msgRoomAuthDown = "room access could not be checked now; try again"

// roomAccess is the one check of a room, for every route and topic:
// whether p may do action in room. A room the token lists is allowed;
// any other is asked of the app's backend (RoomAuth), if there is one,
// whoever p is (staff too: their token's rooms bound them as well).
func (s *server) roomAccess(ctx context.Context, p Principal, room string, action roomAction) roomGrant {
	if p.CanRoom(room) {
		return grantToken
	}
	if s.rooms == nil {
		return grantRefused
	}
	switch s.rooms.ask(ctx, p.Subject, room, action) {
	case roomAllowed:
		return grantBackend
	case roomUnavailable:
		return grantUnknown
	}
	return grantRefused
}

// roomsAccess is roomAccess for several rooms at once, its answers in
// rooms' order. The backend is asked about the rooms the token does not
// list concurrently, MaxCallsPerSub at a time, all within one Timeout:
// a room not answered by then is grantUnknown. So a request of many
// rooms waits about one question's time, not one per room.
func (s *server) roomsAccess(ctx context.Context, p Principal, rooms []string, action roomAction) []roomGrant {
	grants := make([]roomGrant, len(rooms))
	var ask []int // indexes of the rooms to ask about
	for i, room := range rooms {
		if p.CanRoom(room) || s.rooms == nil {
			grants[i] = s.roomAccess(ctx, p, room, action) // asks nothing
			continue
		}
		ask = append(ask, i)
	}
	if len(ask) == 0 {
		return grants
	}
	ctx, cancel := context.WithTimeout(ctx, s.rooms.cfg.Timeout)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(s.rooms.cfg.MaxCallsPerSub)
	for _, i := range ask {
		g.Go(func() error {
			grants[i] = s.roomAccess(ctx, p, rooms[i], action)
			return nil
		})
	}
	g.Wait() // the calls return no error
	return grants
}

// recheckRooms is the Recheck of a stream of p whose topics granted
// holds rooms the backend granted: every RoomAuth.Cache it asks about
// those again (as roomsAccess), and returns a `refused` event for each
// the backend no longer grants: at once on a no (403); when the backend
// cannot be asked, once its last yes for the stream is twice Cache old
// (503): an outage, or a flood of another user's questions, withdraws
// nothing at first, yet fails closed in the end.
// It returns nil when granted is empty: nothing to ask again.
func (s *server) recheckRooms(p Principal, granted []string) (func(context.Context, []string) []stream.Event, time.Duration) {
	if len(granted) == 0 {
		return nil, 0
	}
	every := s.rooms.cfg.Cache
	// The time of each topic's last yes; read and written by the
	// stream's checker alone, one Recheck at a time.
	lastYes := make(map[string]time.Time, len(granted))
	for _, t := range granted {
		lastYes[t] = s.now()
	}
	return func(ctx context.Context, topics []string) []stream.Event {
		var asked, rooms []string
		for _, t := range topics {
			if _, ok := lastYes[t]; ok {
				_, room, _ := store.ParseTopic(t)
				asked, rooms = append(asked, t), append(rooms, room)
			}
		}
		grants := s.roomsAccess(ctx, p, rooms, roomRead)
		now := s.now()
		var out []stream.Event
		for i, g := range grants {
			t := asked[i]
			switch {
			case g.ok():
				lastYes[t] = now
				continue
			case g == grantUnknown && now.Sub(lastYes[t]) < roomUnknownGrace*every:
				continue // cannot tell now: still granted for a while
			}
			status, msg := g.refusal(rooms[i])
			out = append(out, refusedEvent(protocol.Refused{Topic: t, Status: status, Error: msg}))
		}
		return out
	}, every
}

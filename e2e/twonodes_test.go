package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"changecast/internal/sseclient"
	"changecast/store/bolt"
	"changecast/store/streamsource"
	"changecast/stream"
)

// TestTwoMultiplexersSameIDs runs two multiplexers (two "processes") over
// the same change log. They give every change the same id, so a client
// that was on one resumes on the other with nothing lost or doubled.
func TestTwoMultiplexersSameIDs(t *testing.T) {
	t.Parallel()
	b, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	serve := func() *httptest.Server {
		m := stream.New(streamsource.New(b), stream.Config{TopicBuffer: 8})
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			last := r.Header.Get("Last-Event-ID")
			m.Serve(w, r, stream.StreamOptions{Topics: []string{"rooms/shared"}, LastEventID: last})
		}))
		t.Cleanup(func() { m.Close(); srv.Close() })
		return srv
	}
	a, c := serve(), serve()
	post := func(text string) {
		if _, err := b.PostMessage(t.Context(), "shared", "t", text); err != nil {
			t.Fatal(err)
		}
	}

	onA, onC := watch(t, a.URL, ""), watch(t, c.URL, "")
	onA.WaitN(t, 1)
	onC.WaitN(t, 1)
	for i := range 10 {
		post(fmt.Sprint("m", i))
	}
	evA, evC := onA.WaitN(t, 11), onC.WaitN(t, 11)
	for i := 1; i < 11; i++ {
		if evA[i].ID != evC[i].ID || string(evA[i].Data) != string(evC[i].Data) {
			t.Fatalf("event %d: process A sent %s, process C %s", i, evA[i].ID, evC[i].ID)
		}
	}
	// The client on A goes away after m4, the writer goes on (far past
	// C's buffer of 8), and the client comes back on C.
	onA.Stop(t)
	for i := 10; i < 30; i++ {
		post(fmt.Sprint("m", i))
	}
	back := watch(t, c.URL, evA[5].ID)
	got := back.WaitN(t, 25)
	for i, ev := range got {
		p := payload(t, ev)
		if want := fmt.Sprint("m", i+5); ev.Name != "message" || p.Message.Text != want {
			t.Fatalf("resumed on the other process: event %d is %s %q, want message %q", i, ev.Name, p.Message.Text, want)
		}
	}
	checkOrdered(t, append([]sseclient.Event{evA[5]}, got...))
}

package loadgen

import (
	"fmt"
	"strconv"
	"testing"
)

// TestStormCheck feeds one storm client duplicates, a gap, a
// reordering and a stranger, and checks each is counted.
func TestStormCheck(t *testing.T) {
	l := newRoomLog(5)
	for i := range 5 {
		l.add(fmt.Sprintf("id%d", i), "t"+strconv.Itoa(i))
	}
	for i := range 5 {
		if id, text := string(l.id(i)), string(l.text(i)); id != fmt.Sprintf("id%d", i) || text != fmt.Sprintf(`"text":"t%d"`, i) {
			t.Fatalf("message %d recorded as %q %q", i, id, text)
		}
	}
	ev := func(i int, text string) []byte {
		return []byte(fmt.Sprintf(`{"topic":"rooms/r","message":{"id":"id%d","text":"%s"}}`, i, text))
	}
	c := &stormClient{log: l, seen: make([]uint64, 1)}
	for _, d := range [][]byte{ev(0, "t0"), ev(0, "t0"), ev(2, "t2"), ev(1, "t1"), ev(3, "wrong"), ev(9, "t9"), ev(3, "t3")} {
		c.check(d)
	}
	if c.got != 4 || c.dups != 1 || c.disorder != 1 || c.unexpected != 2 {
		t.Errorf("got %d new, %d dups, %d out of order, %d unexpected; want 4, 1, 1, 2", c.got, c.dups, c.disorder, c.unexpected)
	}
}

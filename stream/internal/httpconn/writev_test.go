package httpconn

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the server's
// send buffer shrunk so that writes fill it soon.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server.(*net.TCPConn).SetWriteBuffer(16 << 10)
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// TestGatherWriter: many pieces, more than one writev takes, to a reader
// slower than the writer arrive whole and in order.
func TestGatherWriter(t *testing.T) {
	server, client := tcpPair(t)
	var want []byte
	var bufs [][]byte
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		b := make([]byte, r.IntN(700))
		for j := range b {
			b[j] = byte(i + j)
		}
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	got := make(chan []byte)
	// About 1 MiB through a 16 KiB send buffer: the writer blocks and
	// resumes many times however soon the reader starts.
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	if err := newGatherWriter(server).write(bufs); err != nil {
		t.Fatal(err)
	}
	server.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("read %d bytes, want the %d written, in order", len(b), len(want))
	}
}

// TestGatherWriterDeadline: a write to a client that does not read ends
// at the write deadline.
func TestGatherWriterDeadline(t *testing.T) {
	server, _ := tcpPair(t)
	big := make([]byte, 1<<20)
	server.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	err := newGatherWriter(server).write([][]byte{big, big, big, big})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing 4 MiB to a client that does not read: %v; want the deadline exceeded", err)
	}
}

// TestGatherWriterAllocs: a live write allocates nothing.
func TestGatherWriterAllocs(t *testing.T) {
	server, client := tcpPair(t)
	go io.Copy(io.Discard, client)
	g := newGatherWriter(server)
	hdr, frame, end := []byte("22\r\n"), []byte("id: 1\nevent: message\ndata: {}\n\n"), []byte("\r\n")
	bufs := make([][]byte, 3)
	if n := testing.AllocsPerRun(100, func() {
		bufs[0], bufs[1], bufs[2] = hdr, frame, end
		if err := g.write(bufs); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a write allocates %v times, want 0", n)
	}
}

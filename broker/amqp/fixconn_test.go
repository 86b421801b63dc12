package amqp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
)

// chunkConn is a net.Conn whose Read hands out at most n bytes at a time.
type chunkConn struct {
	net.Conn
	r io.Reader
	n int
}

func (c *chunkConn) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

func frame(typ byte, payload []byte) []byte {
	b := []byte{typ, 0, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[3:], uint32(len(payload)))
	b = append(b, payload...)
	return append(b, 0xCE)
}

func longstr(typ byte, s []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(s)))
	return append(b, s...)
}

func field(name string, value []byte) []byte {
	return append(append([]byte{byte(len(name))}, name...), value...)
}

func int64Field(letter byte, v int64) []byte {
	b := make([]byte, 9)
	b[0] = letter
	binary.BigEndian.PutUint64(b[1:], uint64(v))
	return b
}

// headerPayload builds a basic content header with content-type,
// content-encoding and a headers table written as py-amqp writes it.
func headerPayload(letter byte) []byte {
	nested := longstr('F', field("n", int64Field(letter, 1<<40)))
	array := longstr('A', append(append(int64Field(letter, -1<<40), 'V'), int64Field('I', 0)[:5]...))
	var table []byte
	table = append(table, field("big", int64Field(letter, 1<<40))...)
	table = append(table, field("s", longstr('S', []byte("L in a string: L")))...)
	table = append(table, field("stamps", nested)...)
	table = append(table, field("tl", array)...)
	table = append(table, field("f", append([]byte{'d'}, make([]byte, 8)...))...)
	table = append(table, field("dec", []byte{'D', 2, 0, 0, 0, 110})...)
	table = append(table, field("b", []byte{'t', 1})...)
	p := []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xE0, 0}
	p = append(p, 16)
	p = append(p, "application/json"...)
	p = append(p, 5)
	p = append(p, "utf-8"...)
	return append(p, longstr('F', table)[1:]...)
}

func TestFixConn(t *testing.T) {
	method := frame(1, []byte{0, 60, 0, 60, 'L', 'L', 'L'}) // basic.deliver-ish; must pass untouched
	body := frame(3, bytes.Repeat([]byte("L"), 10000))
	heartbeat := frame(8, nil)
	in := bytes.Join([][]byte{method, frame(2, headerPayload('L')), body, heartbeat, frame(2, headerPayload('L')), body}, nil)
	want := bytes.Join([][]byte{method, frame(2, headerPayload('l')), body, heartbeat, frame(2, headerPayload('l')), body}, nil)
	for _, chunk := range []int{1, 2, 3, 7, 8, 100, 4096, 1 << 20} {
		for _, readSize := range []int{1, 5, 4096} {
			c := &fixConn{Conn: &chunkConn{r: bytes.NewReader(in), n: chunk}}
			var out []byte
			buf := make([]byte, readSize)
			for {
				n, err := c.Read(buf)
				out = append(out, buf[:n]...)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("chunk %d, read size %d: output differs from the expected rewrite", chunk, readSize)
			}
		}
	}
}

func TestFixConnLeavesMalformedAlone(t *testing.T) {
	good := headerPayload('L')
	tests := map[string][]byte{
		"truncated table": good[:len(good)-3],
		"unknown type":    append(append([]byte{}, good[:len(good)-3]...), 'Z', 0, 0),
		"short payload":   {0, 60, 0},
		"other class":     append([]byte{0, 50}, good[2:]...),
	}
	for name, payload := range tests {
		t.Run(name, func(t *testing.T) {
			p := append([]byte(nil), payload...)
			fixHeaderFrame(p) // must not panic
			in := frame(2, payload)
			c := &fixConn{Conn: &chunkConn{r: bytes.NewReader(in), n: 3}}
			out, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(in) {
				t.Errorf("got %d bytes, want %d", len(out), len(in))
			}
		})
	}
}

func TestFixConnPartialFrameThenError(t *testing.T) {
	in := frame(2, headerPayload('L'))[:20]
	c := &fixConn{Conn: &chunkConn{r: bytes.NewReader(in), n: 7}}
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, in) {
		t.Errorf("partial frame: got %q, want %q", out, in)
	}
}

func FuzzFixHeaderFrame(f *testing.F) {
	f.Add(headerPayload('L'))
	f.Add(headerPayload('l'))
	f.Fuzz(func(t *testing.T, p []byte) {
		q := append([]byte(nil), p...)
		fixHeaderFrame(q)
		if len(q) != len(p) {
			t.Fatal("length changed")
		}
		for i := range p {
			if p[i] != q[i] && !(p[i] == 'L' && q[i] == 'l') {
				t.Fatalf("byte %d changed from %q to %q", i, p[i], q[i])
			}
		}
	})
}

package amqp

import (
	"encoding/binary"
	"math"
	"net"
)

// fixConn rewrites, as frames arrive, the one field-table type that
// py-amqp writes and amqp091-go cannot read: py-amqp sends every integer
// beyond ±2^31 as 'L' (its historic letter for signed 64-bit), while
// amqp091 knows only RabbitMQ's 'l' and fails the whole connection with a
// frame error ("invalid field or value inside of a frame"). The message
// then goes back to the queue and kills every later connection too, so a
// single Celery message with a large integer header (a millisecond
// timestamp, say) would stop a Go worker for good. RabbitMQ forwards the
// header table untouched, so the fix has to be on our side of the socket.
//
// Both letters carry 8 bytes, so the rewrite is in place: only content
// header frames (type 2) are buffered and parsed; all other frames,
// message bodies included, stream through unparsed. A header frame it
// cannot parse is passed on unchanged, for amqp091 to judge.
type fixConn struct {
	net.Conn
	buf  []byte // bytes read from Conn not yet returned: buf[r:w]
	r, w int
	pass int   // bytes still to pass through before the next frame boundary
	err  error // read error from Conn, returned once buf is drained
}

const (
	frameHeaderType = 2
	frameOverhead   = 7 + 1 // type, channel, size; frame-end octet
	// maxFixedFrame bounds the header frames buffered for repair; the
	// negotiated frame size (128 KiB by default) is far below it.
	maxFixedFrame = 1 << 20
	basicClass    = 60
)

func (c *fixConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.pass > 0 {
			if c.r < c.w {
				n := copy(p, c.buf[c.r:c.r+min(c.w-c.r, c.pass)])
				c.r += n
				c.pass -= n
				return n, nil
			}
			if c.err != nil {
				return 0, c.err
			}
			// Stream the rest of this frame straight into p.
			n, err := c.Conn.Read(p[:min(len(p), c.pass)])
			c.pass -= n
			return n, err
		}
		need := 7
		if avail := c.w - c.r; avail >= 7 {
			size := int(binary.BigEndian.Uint32(c.buf[c.r+3:]))
			total := size + frameOverhead
			if c.buf[c.r] != frameHeaderType || total > maxFixedFrame {
				c.pass = total
				continue
			}
			if avail >= total {
				fixHeaderFrame(c.buf[c.r+7 : c.r+7+size])
				c.pass = total
				continue
			}
			need = total
		}
		if c.err != nil { // a partial frame, then the error
			c.pass = math.MaxInt
			continue
		}
		c.fill(need)
	}
}

// fill reads from Conn until at least need bytes are buffered or it fails.
func (c *fixConn) fill(need int) {
	if c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if need > len(c.buf) {
		b := make([]byte, max(need, 4096, 2*len(c.buf)))
		copy(b, c.buf[:c.w])
		c.buf = b
	}
	for c.w < need && c.err == nil {
		n, err := c.Conn.Read(c.buf[c.w:])
		c.w += n
		c.err = err
	}
}

// fixHeaderFrame rewrites 'L' to 'l' in the headers table of a basic
// content header payload: class-id, weight, body-size, property flags,
// then content-type and content-encoding (short strings) and headers.
func fixHeaderFrame(p []byte) {
	if len(p) < 14 || binary.BigEndian.Uint16(p) != basicClass {
		return
	}
	flags := binary.BigEndian.Uint16(p[12:])
	off := 14
	for f := flags; f&1 != 0; off += 2 { // continuation flag words
		if off+2 > len(p) {
			return
		}
		f = binary.BigEndian.Uint16(p[off:])
	}
	for _, bit := range []uint16{0x8000, 0x4000} { // content-type, content-encoding
		if flags&bit != 0 {
			if off >= len(p) {
				return
			}
			off += 1 + int(p[off])
		}
	}
	if flags&0x2000 != 0 {
		fixTable(p, off, 0)
	}
}

// fixTable walks the table at off and returns the offset after it, or -1
// when it is malformed.
func fixTable(p []byte, off, depth int) int {
	if depth > maxTableDepth || off+4 > len(p) {
		return -1
	}
	end := off + 4 + int(binary.BigEndian.Uint32(p[off:]))
	if end > len(p) || end < off {
		return -1
	}
	for off += 4; off < end; {
		off += 1 + int(p[off]) // field name
		if off >= end {
			return -1
		}
		if off = fixValue(p[:end], off, depth); off < 0 {
			return -1
		}
	}
	return end
}

// fixValue walks one typed value at off and returns the offset after it,
// or -1.
func fixValue(p []byte, off, depth int) int {
	typ := p[off]
	off++
	var n int
	switch typ {
	case 'V':
	case 't', 'b', 'B':
		n = 1
	case 's', 'u', 'U':
		n = 2
	case 'I', 'i', 'f':
		n = 4
	case 'D':
		n = 5
	case 'L':
		p[off-1] = 'l'
		n = 8
	case 'l', 'd', 'T':
		n = 8
	case 'S', 'x':
		if off+4 > len(p) {
			return -1
		}
		n = 4 + int(binary.BigEndian.Uint32(p[off:]))
	case 'F':
		return fixTable(p, off, depth+1)
	case 'A':
		if off+4 > len(p) || depth > maxTableDepth {
			return -1
		}
		end := off + 4 + int(binary.BigEndian.Uint32(p[off:]))
		if end > len(p) || end < off {
			return -1
		}
		for off += 4; off < end; {
			if off = fixValue(p[:end], off, depth+1); off < 0 {
				return -1
			}
		}
		return end
	default:
		return -1
	}
	if off+n > len(p) {
		return -1
	}
	return off + n
}

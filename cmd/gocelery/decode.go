package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gocelery/gocelery/protocol"
)

// headerFlags collects repeated --header name=value flags; values are
// parsed as JSON when they parse, else kept as strings.
type headerFlags map[string]any

func (h headerFlags) String() string { return fmt.Sprint(map[string]any(h)) }

func (h headerFlags) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("want name=value, got %q", s)
	}
	if v, err := protocol.UnmarshalJSON([]byte(value), 0); err == nil {
		h[name] = v
	} else {
		h[name] = value
	}
	return nil
}

func runDecode(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	contentType := fs.String("content-type", "application/json", "content type of a raw AMQP body")
	contentEncoding := fs.String("content-encoding", "utf-8", "content encoding of a raw AMQP body")
	headersJSON := fs.String("headers", "", "AMQP application headers of a raw body, as a JSON object")
	headers := headerFlags{}
	fs.Var(headers, "header", "one AMQP header of a raw body, name=value (repeatable)")
	jsonOnly := fs.Bool("json", false, "print only the request as JSON, without Celery's log line")
	maxSize := fs.Int("max-size", protocol.DefaultMaxBodySize, "largest body accepted, in bytes")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: gocelery decode [flags] [file|-]

Reads one captured message from file (or stdin) and prints it as a Celery
worker sees it. Accepted forms, detected from the content:
  - kombu's Redis envelope (what LPUSH stores: {"body", "headers", "properties", ...})
  - a capture file of the wire reference ({"raw": ...} or {"messages": [...]})
  - a test vector ({"wire": ...})
  - a raw AMQP body; give its headers with --headers/--header (a v2 message
    needs at least task and id), or none for a protocol v1 body

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return errors.New("at most one file")
	}
	var data []byte
	var err error
	if name := fs.Arg(0); name == "" || name == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, int64(*maxSize)*2+1))
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return err
	}
	if *headersJSON != "" {
		v, err := protocol.UnmarshalJSON([]byte(*headersJSON), 0)
		if err != nil {
			return fmt.Errorf("--headers: %w", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return errors.New("--headers must be a JSON object")
		}
		for k, v := range m {
			if _, set := headers[k]; !set {
				headers[k] = v
			}
		}
	}
	raws, err := readMessages(data, *maxSize, protocol.Raw{
		ContentType: *contentType, ContentEncoding: *contentEncoding, Headers: headers,
	})
	if err != nil {
		return err
	}
	dec := protocol.Decoder{MaxBodySize: *maxSize}
	for i, r := range raws {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		m, err := dec.Decode(r.raw)
		if err != nil {
			return fmt.Errorf("%smessage does not decode: %w", r.where, err)
		}
		if !*jsonOnly {
			fmt.Fprintln(stdout, receivedLine(m, r.queue))
		}
		out, err := protocol.MarshalJSON(m.RequestDict())
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, indentJSON(out))
	}
	return nil
}

type located struct {
	raw   *protocol.Raw
	queue string
	where string
}

// readMessages finds the message(s) in data, whichever form it has.
func readMessages(data []byte, maxSize int, rawTemplate protocol.Raw) ([]located, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		if v, err := protocol.UnmarshalJSON([]byte(trimmed), 0); err == nil {
			if obj, ok := v.(map[string]any); ok {
				if msgs, ok := fromDocument(obj, maxSize); ok {
					return msgs()
				}
			}
		}
	}
	// A raw AMQP body: headers came from flags.
	raw := rawTemplate
	raw.Body = data
	if raw.Headers == nil {
		raw.Headers = map[string]any{}
	}
	return []located{{raw: &raw}}, nil
}

func fromDocument(obj map[string]any, maxSize int) (func() ([]located, error), bool) {
	envelope := func(s string, where string) ([]located, error) {
		env, err := protocol.ParseEnvelope([]byte(s), maxSize*2)
		if err != nil {
			return nil, fmt.Errorf("%s%w", where, err)
		}
		return []located{{raw: &env.Raw, queue: env.RoutingKey, where: where}}, nil
	}
	switch {
	case obj["body"] != nil && (obj["headers"] != nil || obj["properties"] != nil):
		return func() ([]located, error) {
			b, err := protocol.MarshalJSON(obj)
			if err != nil {
				return nil, err
			}
			return envelope(string(b), "")
		}, true
	case obj["raw"] != nil:
		s, ok := obj["raw"].(string)
		return func() ([]located, error) {
			if !ok {
				return nil, errors.New(`"raw" must be a string`)
			}
			return envelope(s, "")
		}, true
	case obj["messages"] != nil:
		return func() ([]located, error) {
			list, _ := obj["messages"].([]any)
			var out []located
			for i, m := range list {
				mm, _ := m.(map[string]any)
				s, ok := mm["raw"].(string)
				if !ok {
					return nil, fmt.Errorf("messages[%d] has no raw string", i)
				}
				l, err := envelope(s, fmt.Sprintf("messages[%d]: ", i))
				if err != nil {
					return nil, err
				}
				out = append(out, l...)
			}
			return out, nil
		}, true
	case obj["wire"] != nil:
		return func() ([]located, error) { return fromVector(obj) }, true
	}
	return nil, false
}

func fromVector(obj map[string]any) ([]located, error) {
	w, _ := obj["wire"].(map[string]any)
	body, err := base64.StdEncoding.DecodeString(fmt.Sprint(w["body_b64"]))
	if err != nil {
		return nil, fmt.Errorf("wire.body_b64: %w", err)
	}
	// Route the properties through the envelope parser, which knows them.
	env, err := protocol.MarshalJSON(map[string]any{
		"body": base64.StdEncoding.EncodeToString(body), "content-type": w["content_type"],
		"content-encoding": w["content_encoding"], "headers": w["headers"],
		"properties": withBase64(w["properties"]),
	})
	if err != nil {
		return nil, err
	}
	e, err := protocol.ParseEnvelope(env, 0)
	if err != nil {
		return nil, err
	}
	return []located{{raw: &e.Raw}}, nil
}

func withBase64(p any) map[string]any {
	out := map[string]any{"body_encoding": "base64"}
	if m, ok := p.(map[string]any); ok {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// receivedLine is the line a Celery worker logs on receipt
// (celery.app.trace LOG_RECEIVED), with the ETA and queue when known.
func receivedLine(m *protocol.Message, queue string) string {
	s := fmt.Sprintf("Task %s[%s] received", m.Name(), m.ID)
	if !m.ETA.IsZero() {
		s += " ETA:[" + protocol.FormatISO(m.ETA) + "]"
	}
	if queue != "" {
		s += " queue:" + queue
	}
	s += fmt.Sprintf(" (protocol v%d, %s", m.Protocol, m.ContentType)
	if m.Compression != "" {
		s += ", " + m.Compression
	}
	return s + ")"
}

// indentJSON pretty-prints compact kombu JSON without re-encoding values.
func indentJSON(b []byte) string {
	var out strings.Builder
	depth, inStr, esc := 0, false, false
	nl := func() {
		out.WriteByte('\n')
		out.WriteString(strings.Repeat("  ", depth))
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			out.WriteByte(c)
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
			out.WriteByte(c)
		case '{', '[':
			if i+1 < len(b) && (b[i+1] == '}' || b[i+1] == ']') {
				out.WriteByte(c)
				out.WriteByte(b[i+1])
				i++
				continue
			}
			out.WriteByte(c)
			depth++
			nl()
		case '}', ']':
			depth--
			nl()
			out.WriteByte(c)
		case ',':
			out.WriteByte(c)
			nl()
			if i+1 < len(b) && b[i+1] == ' ' {
				i++
			}
		default:
			out.WriteByte(c)
		}
	}
	return out.String()
}

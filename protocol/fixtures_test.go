package protocol

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// capture is one message of a file in testdata/fixtures: bytes captured
// from a real Celery producer or worker on Redis (copied from the shared
// wire reference).
type capture struct {
	file    string
	raw     string
	decoded map[string]any
}

func loadCaptures(t testing.TB) []capture {
	t.Helper()
	files, err := filepath.Glob("testdata/fixtures/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	var out []capture
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := UnmarshalJSON(data, 0)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		doc := v.(map[string]any)
		msgs, ok := doc["messages"].([]any)
		if !ok {
			msgs = []any{doc}
		}
		for _, m := range msgs {
			mm := m.(map[string]any)
			out = append(out, capture{filepath.Base(f), mm["raw"].(string), mm["decoded"].(map[string]any)})
		}
	}
	return out
}

// expectFromCapture builds, from the captured headers, properties and
// decoded body, the RequestDict a correct decoder must produce.
func expectFromCapture(t *testing.T, c capture) map[string]any {
	t.Helper()
	d := c.decoded
	h := d["headers"].(map[string]any)
	p := d["properties"].(map[string]any)
	body := d["body_decoded"]
	if bm, ok := body.(map[string]any); ok && bm["msgpack_hex"] != nil {
		b, err := hex.DecodeString(bm["msgpack_hex"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if body, err = UnmarshalMsgpack(b, 0); err != nil {
			t.Fatal(err)
		}
	}
	parts := body.([]any)
	embed := parts[2].(map[string]any)
	custom := map[string]any{}
	for k, v := range h {
		if !IsStandardHeader(k) {
			custom[k] = v
		}
	}
	iso := func(k string) any {
		if s, ok := h[k].(string); ok {
			tm, err := ParseISO(s)
			if err != nil {
				t.Fatal(err)
			}
			return tm
		}
		return nil
	}
	comp := h["compression"]
	return map[string]any{
		"protocol": int64(2), "id": h["id"], "task": h["task"],
		"args": parts[0], "kwargs": parts[1],
		"eta": iso("eta"), "expires": iso("expires"),
		"retries": h["retries"], "timelimit": h["timelimit"],
		"root_id": h["root_id"], "parent_id": h["parent_id"], "group": h["group"],
		"group_index": h["group_index"], "shadow": h["shadow"], "origin": h["origin"],
		"argsrepr": h["argsrepr"], "kwargsrepr": h["kwargsrepr"], "lang": h["lang"],
		"ignore_result": h["ignore_result"], "replaced_task_nesting": h["replaced_task_nesting"],
		"stamped_headers": h["stamped_headers"], "stamps": h["stamps"],
		"custom_headers": custom,
		"callbacks":      embed["callbacks"], "errbacks": embed["errbacks"],
		"chain": embed["chain"], "chord": embed["chord"],
		"correlation_id": p["correlation_id"], "reply_to": p["reply_to"],
		"delivery_mode": p["delivery_mode"], "priority": p["priority"],
		"content_type": d["content-type"], "content_encoding": d["content-encoding"],
		"compression": comp,
	}
}

// assertSameView compares two request dicts key by key in kombu JSON form.
func assertSameView(t *testing.T, got, want map[string]any) {
	t.Helper()
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("missing key %q", k)
		}
	}
	for k, g := range got {
		w, ok := want[k]
		if !ok {
			t.Errorf("unexpected key %q", k)
			continue
		}
		gj, err1 := canonicalJSON(g)
		wj, err2 := canonicalJSON(w)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: marshal: %v %v", k, err1, err2)
		}
		if string(gj) != string(wj) {
			t.Errorf("%s:\n got  %s\n want %s", k, gj, wj)
		}
	}
}

func TestDecodeCapturedFixtures(t *testing.T) {
	caps := loadCaptures(t)
	if len(caps) < 15 {
		t.Fatalf("only %d captured messages", len(caps))
	}
	for i, c := range caps {
		name := strings.TrimSuffix(c.file, ".json")
		t.Run(name+"/"+string(rune('0'+i%10)), func(t *testing.T) {
			env, err := ParseEnvelope([]byte(c.raw), 0)
			if err != nil {
				t.Fatalf("ParseEnvelope: %v", err)
			}
			m, err := Decode(&env.Raw)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertSameView(t, m.RequestDict(), expectFromCapture(t, c))
			di := c.decoded["properties"].(map[string]any)["delivery_info"].(map[string]any)
			if env.RoutingKey != di["routing_key"] || env.Exchange != di["exchange"] {
				t.Errorf("delivery_info = %q/%q, want %v", env.Exchange, env.RoutingKey, di)
			}
		})
	}
}

// canonicalJSON encodes v with nested signatures turned into plain maps,
// so key order cannot make equal values differ.
func canonicalJSON(v any) (string, error) {
	b, err := MarshalJSON(v)
	if err != nil {
		return "", err
	}
	g, err := UnmarshalJSON(b, 0)
	if err != nil {
		return "", err
	}
	b, err = MarshalJSON(g)
	return string(b), err
}

package redis

import (
	"encoding/json"
	"os"
	"testing"
)

type fixture struct {
	Raw   string `json:"raw"`
	Key   string `json:"key"`
	Field string `json:"field"`
}

func readFixture(t *testing.T, name string) fixture {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestUnackedEntryFixture builds the unacked entry of the captured message
// and compares it with the entry kombu wrote for it, byte for byte.
func TestUnackedEntryFixture(t *testing.T) {
	msg := readFixture(t, "redis-task-message.json")
	want := readFixture(t, "redis-unacked-entry.json")
	got := unackedEntry([]byte(msg.Raw), "", msg.Key)
	if string(got) != want.Raw {
		t.Fatalf("unacked entry\n%s\nkombu wrote\n%s", got, want.Raw)
	}
	env, ex, rk, err := parseEntry(got)
	if err != nil || string(env) != msg.Raw || ex != "" || rk != "celery" {
		t.Fatalf("parseEntry: %q %q %q %v", env, ex, rk, err)
	}
}

func TestMarkRedelivered(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{
			"kombu envelope",
			`{"body": "e30=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "id": "x"}, "properties": {"correlation_id": "x", "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "t"}}`,
			`{"body": "e30=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "id": "x", "redelivered": true}, "properties": {"correlation_id": "x", "delivery_info": {"exchange": "", "routing_key": "celery", "redelivered": true}, "priority": 0, "body_encoding": "base64", "delivery_tag": "t"}}`,
		},
		{
			"already redelivered: keys keep their place",
			`{"headers": {"redelivered": true, "a": 1}, "properties": {"delivery_info": {"redelivered": true, "exchange": ""}}}`,
			`{"headers": {"redelivered": true, "a": 1}, "properties": {"delivery_info": {"redelivered": true, "exchange": ""}}}`,
		},
		{
			"empty headers, nested values untouched",
			`{"headers": {}, "properties": {"delivery_info": {}, "x": {"s": "a\"}b", "l": [1, {"k": "]"}], "f": 1.50}}}`,
			`{"headers": {"redelivered": true}, "properties": {"delivery_info": {"redelivered": true}, "x": {"s": "a\"}b", "l": [1, {"k": "]"}], "f": 1.50}}}`,
		},
		{
			"compact JSON from another client",
			`{"headers":{"a":"\u00e9"},"properties":{"delivery_info":{"exchange":"e"}},"body":"x"}`,
			`{"headers": {"a": "\u00e9", "redelivered": true}, "properties": {"delivery_info": {"exchange": "e", "redelivered": true}}, "body": "x"}`,
		},
		{
			"no headers, no delivery_info",
			`{"body": "x", "properties": {}}`,
			`{"body": "x", "properties": {}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := markRedelivered([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	for _, bad := range []string{`[1]`, `{"a": }`, ``, `"s"`} {
		if _, err := markRedelivered([]byte(bad)); err == nil {
			t.Errorf("markRedelivered(%q): no error", bad)
		}
	}
}

func TestEnvelopePriority(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{`{"properties": {"priority": 7}}`, 7},
		{`{"properties": {"priority": 12}}`, 9},
		{`{"properties": {"priority": -1}}`, 0},
		{`{"properties": {"priority": 5.9}}`, 5},
		{`{"properties": {"priority": "4"}}`, 4},
		{`{"properties": {"priority": null}}`, 0},
		{`{"properties": {}}`, 0},
		{`{}`, 0},
		{`not json`, 0},
	}
	for _, tt := range tests {
		if got := envelopePriority([]byte(tt.in)); got != tt.want {
			t.Errorf("envelopePriority(%s) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseEntryErrors(t *testing.T) {
	for _, bad := range []string{`{}`, `[{}, "", ""`, `[{}, 1, "q"]`, `[{}, "", "q", 4]`, `[{}, ""]`} {
		if _, _, _, err := parseEntry([]byte(bad)); err == nil {
			t.Errorf("parseEntry(%q): no error", bad)
		}
	}
}

package redis

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

func TestStep(t *testing.T) {
	tests := []struct {
		steps []int
		p     int
		want  int
	}{
		{nil, -5, 0}, {nil, 0, 0}, {nil, 2, 0}, {nil, 3, 3}, {nil, 5, 3},
		{nil, 6, 6}, {nil, 7, 6}, {nil, 8, 6}, {nil, 9, 9}, {nil, 10, 9}, {nil, 255, 9},
		{[]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 7, 7},
		{[]int{9, 0, 5, 5}, 4, 0}, // sorted and deduplicated first
		{[]int{9, 0, 5, 5}, 6, 5},
		// Below the first step Python's index -1 wraps to the last one.
		{[]int{2, 5}, 1, 5},
	}
	for _, tt := range tests {
		if got := newKeyspace("", 0, tt.steps).step(tt.p); got != tt.want {
			t.Errorf("steps %v: step(%d) = %d, want %d", tt.steps, tt.p, got, tt.want)
		}
	}
}

func TestKeyNames(t *testing.T) {
	tests := []struct {
		prefix, got, want string
	}{
		{"", newKeyspace("", 0, nil).listFor("celery", 0), "celery"},
		{"", newKeyspace("", 0, nil).listFor("celery", 7), "celery\x06\x166"},
		{"", newKeyspace("", 0, nil).listFor("celery", 4), "celery\x06\x163"},
		{"", newKeyspace("", 0, nil).listFor("celery", 9), "celery\x06\x169"},
		{"pfx_", newKeyspace("pfx_", 0, nil).listFor("celery", 3), "pfx_celery\x06\x163"},
		{"pfx_", newKeyspace("pfx_", 0, nil).binding("celery"), "pfx__kombu.binding.celery"},
		{"pfx_", newKeyspace("pfx_", 0, nil).permanent("celery"), "pfx__kombu.binding_permanent.celery"},
		{"pfx_", newKeyspace("pfx_", 0, nil).unacked(), "pfx_unacked"},
		{"pfx_", newKeyspace("pfx_", 0, nil).unackedIdx(), "pfx_unacked_index"},
		{"pfx_", newKeyspace("pfx_", 0, nil).mutex(), "pfx_unacked_mutex"},
		{"", newKeyspace("", 0, nil).fanout("celery.pidbox", ""), "/0.celery.pidbox"},
		{"", newKeyspace("", 3, nil).fanout("celeryev", "worker.heartbeat"), "/3.celeryev/worker.heartbeat"},
		{"pfx_", newKeyspace("pfx_", 0, nil).fanout("celeryev", "task.multi"), "pfx_/0.celeryev/task.multi"},
		{"", bindingMember("celery", "", "celery"), "celery\x06\x16\x06\x16celery"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("prefix %q: got %q, want %q", tt.prefix, tt.got, tt.want)
		}
	}
	if got := newKeyspace("", 0, nil).lists("q"); !reflect.DeepEqual(got, []string{"q", "q\x06\x163", "q\x06\x166", "q\x06\x169"}) {
		t.Errorf("lists = %q", got)
	}
}

// topicCases are kombu 5.7's patterns and re.match results
// (testdata/topic.py).
func topicCases(t *testing.T) (patterns map[string]string, matches [][3]any) {
	data, err := os.ReadFile("testdata/topic.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Patterns map[string]string
		Matches  [][3]any
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v.Patterns, v.Matches
}

func TestTopicPattern(t *testing.T) {
	patterns, _ := topicCases(t)
	for key, want := range patterns {
		if got := topicPattern(key); got != want {
			t.Errorf("topicPattern(%q) = %q, kombu stores %q", key, got, want)
		}
	}
}

func TestTopicMatch(t *testing.T) {
	patterns, matches := topicCases(t)
	var c patternCache
	for _, m := range matches {
		key, rk, want := m[0].(string), m[1].(string), m[2].(bool)
		if got := c.match(patterns[key], rk); got != want {
			t.Errorf("binding key %q (pattern %q, Go %q), routing key %q: match %v, Python re.match %v",
				key, patterns[key], goRegexp(patterns[key]), rk, got, want)
		}
	}
}

func TestParseBinding(t *testing.T) {
	tests := []struct {
		member string
		want   binding
		ok     bool
	}{
		{"celery\x06\x16\x06\x16celery", binding{"celery", "", "celery"}, true},
		{"a.*.#\x06\x16^a\\.[^\\.]+\\..*?$\x06\x16tq", binding{"a.*.#", `^a\.[^\.]+\..*?$`, "tq"}, true},
		{"\x06\x16\x06\x16celery@host.celery.pidbox", binding{"", "", "celery@host.celery.pidbox"}, true},
		{"garbage", binding{}, false},
	}
	for _, tt := range tests {
		got, ok := parseBinding(tt.member)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseBinding(%q) = %+v, %v; want %+v, %v", tt.member, got, ok, tt.want, tt.ok)
		}
	}
}

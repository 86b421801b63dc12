package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// TestEveryKey parses each setting gocelery uses from a good value and
// rejects a bad one with an error naming the key.
func TestEveryKey(t *testing.T) {
	tests := []struct {
		key, good, bad string
		check          func(f *File) any
		want           any
	}{
		{"broker_url", "amqp://a//", "{x: 1}", func(f *File) any { return f.BrokerURL }, "amqp://a//"},
		{"broker_failover_strategy", "shuffle", "random", func(f *File) any { return f.BrokerFailoverStrategy }, "shuffle"},
		{"broker_transport_options", "{visibility_timeout: 3600, master_name: m}", "[1]",
			func(f *File) any { return f.BrokerTransportOptions }, map[string]any{"visibility_timeout": 3600, "master_name": "m"}},
		{"result_backend", "rpc://", "[a]", func(f *File) any { return f.ResultBackend }, "rpc://"},
		{"result_backend_transport_options", "{global_keyprefix: p}", "x",
			func(f *File) any { return f.ResultBackendTransportOptions }, map[string]any{"global_keyprefix": "p"}},
		{"result_expires", "3600", "-1", func(f *File) any { return f.ResultExpires }, time.Hour},
		{"result_extended", "true", "yes please", func(f *File) any { return f.ResultExtended }, true},
		{"task_queues", "[{name: q}]", "[{name: q, exchange_type: topik}]", func(f *File) any { return f.Topology.Queues[0].Name }, "q"},
		{"task_default_queue", "work", "''", func(f *File) any { return f.Topology.DefaultQueue }, "work"},
		{"task_default_exchange", "ex", "[ex]", func(f *File) any { return f.Topology.DefaultExchange }, "ex"},
		{"task_default_exchange_type", "topic", "tropic", func(f *File) any { return f.Topology.DefaultExchangeType }, "topic"},
		{"task_default_routing_key", "rk", "{a: b}", func(f *File) any { return f.Topology.DefaultRoutingKey }, "rk"},
		{"task_default_queue_type", "quorum", "stream", func(f *File) any { return f.Topology.DefaultQueueType }, "quorum"},
		{"task_queue_max_priority", "10", "256", func(f *File) any { return *f.Topology.MaxPriority }, 10},
		{"task_create_missing_queues", "false", "0", func(f *File) any { return f.Topology.CreateMissingQueues }, false},
		{"task_create_missing_queue_type", "quorum", "fast", func(f *File) any { return f.Topology.CreateMissingQueueType }, "quorum"},
		{"task_create_missing_queue_exchange_type", "fanout", "x", func(f *File) any { return f.Topology.CreateMissingQueueExchangeType }, "fanout"},
		{"worker_detect_quorum_queues", "false", "nope", func(f *File) any { return f.Topology.DetectQuorumQueues }, false},
		{"broker_native_delayed_delivery_queue_type", "classic", "quorumm", func(f *File) any { return f.Topology.DelayedDeliveryQueueType }, "classic"},
		{"worker_concurrency", "8", "0", func(f *File) any { return f.WorkerConcurrency }, 8},
		{"worker_prefetch_multiplier", "1", "1.5", func(f *File) any { return f.WorkerPrefetchMultiplier }, 1},
		{"worker_eta_task_limit", "100", "-3", func(f *File) any { return f.WorkerEtaTaskLimit }, 100},
		{"worker_send_task_events", "true", "'true'", func(f *File) any { return f.WorkerSendTaskEvents }, true},
		{"worker_state_db", "/tmp/state", "[a, b]", func(f *File) any { return f.WorkerStateDB }, "/tmp/state"},
		{"task_acks_late", "true", "1", func(f *File) any { return f.TaskAcksLate }, true},
		{"task_acks_on_failure_or_timeout", "false", "null", func(f *File) any { return f.TaskAcksOnFailureOrTimeout }, false},
		{"task_reject_on_worker_lost", "true", "on?", func(f *File) any { return f.TaskRejectOnWorkerLost }, true},
		{"task_track_started", "true", "[true]", func(f *File) any { return f.TaskTrackStarted }, true},
		{"redbeat_redis_url", "redis://r/1", "{}", func(f *File) any { return f.RedbeatRedisURL }, "redis://r/1"},
		{"redbeat_key_prefix", "\"rb:\"", "[]", func(f *File) any { return f.RedbeatKeyPrefix }, "rb:"},
	}
	covered := make(map[string]bool)
	for _, tt := range tests {
		covered[tt.key] = true
		t.Run(tt.key, func(t *testing.T) {
			f, err := Parse([]byte(tt.key + ": " + tt.good + "\n"))
			if err != nil {
				t.Fatalf("good value %q: %v", tt.good, err)
			}
			if !f.Has(tt.key) {
				t.Errorf("Has(%q) = false", tt.key)
			}
			if got := tt.check(f); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s: %q gives %#v, want %#v", tt.key, tt.good, got, tt.want)
			}
			_, err = Parse([]byte(tt.key + ": " + tt.bad + "\n"))
			if err == nil {
				t.Fatalf("bad value %q accepted", tt.bad)
			}
			if !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error for bad %s does not name the key: %v", tt.key, err)
			}
		})
	}
	for key := range settings {
		if !covered[key] {
			t.Errorf("setting %s has no test case", key)
		}
	}
}

func TestDefaults(t *testing.T) {
	f, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Topology, DefaultTopology()) || f.BrokerFailoverStrategy != "round-robin" || !f.TaskAcksOnFailureOrTimeout {
		t.Errorf("empty file: %+v", f)
	}
	if f.Has("broker_url") {
		t.Error("empty file has broker_url")
	}
}

func TestBrokerURLList(t *testing.T) {
	f, err := Parse([]byte("broker_url:\n  - amqp://h1//\n  - amqp://h2//\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.BrokerURL != "amqp://h1//;amqp://h2//" {
		t.Errorf("BrokerURL = %q", f.BrokerURL)
	}
	f, err = Parse([]byte("broker_url: amqp://h1//;amqp://h2//\n"))
	if err != nil || f.BrokerURL != "amqp://h1//;amqp://h2//" {
		t.Errorf("BrokerURL = %q, %v", f.BrokerURL, err)
	}
	if _, err := Parse([]byte("broker_url: []\n")); err == nil || !strings.Contains(err.Error(), "broker_url") {
		t.Errorf("empty list: %v", err)
	}
}

func TestUnknownAndIgnoredKeys(t *testing.T) {
	tests := []struct {
		yaml, want string
	}{
		{"worker_prefetch_multiplyer: 1\n", `"worker_prefetch_multiplyer" (not a Celery 5.7 setting name: did you mean worker_prefetch_multiplier?)`},
		{"CELERY_TASK_ACKS_LATE: true\n", "the new name is task_acks_late"},
		{"BROKER_URL: amqp://\n", "write it in lowercase, broker_url"},
		{"task_queues: [{name: q, exchnage: x}]\n", `task_queues: [0]: line 1: unknown setting "exchnage"`},
		{"task_queues: [{name: q, bindings: [{exchange: e, key: k}]}]\n", `unknown setting "key"`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want ErrUnknownKey with %q", tt.yaml, err, tt.want)
		}
	}
	f, err := Parse([]byte("task_serializer: json\nworker_max_tasks_per_child: 100\ntask_acks_late: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"line 1: task_serializer is a Celery setting gocelery ignores",
		"line 2: worker_max_tasks_per_child is a Celery setting gocelery ignores"}
	if !slices.Equal(f.Warnings, want) {
		t.Errorf("warnings = %q, want %q", f.Warnings, want)
	}
}

func TestBadQueues(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"task_queues: [{exchange: x}]", "task_queues: [0]: name: a queue needs a name"},
		{"task_queues: [{name: a}, {name: a}]", `task_queues: [1]: queue "a" is listed twice`},
		{"task_queues: [{name: a, exchange: x, bindings: [{exchange: y}]}]", "task_queues: [0]: exchange and bindings"},
		{"task_queues: [{name: a, bindings: [{routing_key: k}]}]", "task_queues: [0]: bindings[0].exchange"},
		{"task_queues: [{name: a, bindings: [{exchange: y, exchange_type: fan}]}]", "bindings[0].exchange_type"},
		{"task_queues: [{name: a, max_priority: 300}]", "task_queues: [0]: max_priority"},
		{"task_queues: [{name: a, message_ttl: -1}]", "task_queues: [0]: message_ttl"},
		{"task_queues: [{name: a, max_length: -1}]", "task_queues: [0]: max_length"},
		{"task_queues: [{name: a, durable: maybe}]", "task_queues"},
		{"task_queues: [{name: a, queue_arguments: {x-queue-type: fast}}]", "task_queues: [0]: queue_arguments: x-queue-type"},
		{"task_queues: {a: {name: b}}", `task_queues: [a]: name: "b" differs from its key "a"`},
		{"task_queues: 3", "task_queues: want a list of queues"},
		{"task_acks_late: true\ntask_acks_late: false", "task_acks_late is set twice"},
		{"[1, 2]", "want a mapping of Celery setting names"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want an error with %q", tt.yaml, err, tt.want)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(path, []byte("task_acks_late: maybe\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+": config: line 1: task_acks_late: ") {
		t.Errorf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestMissingQueueRefused(t *testing.T) {
	f, err := Parse([]byte("task_create_missing_queues: false\ntask_queues: [{name: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Topology.Consumed([]string{"a", "b"}); !errors.Is(err, ErrQueueNotFound) {
		t.Errorf("Consumed(a, b) = %v, want ErrQueueNotFound", err)
	}
	qs, err := f.Topology.Consumed(nil)
	if err != nil || len(qs) != 1 || qs[0].Name != "a" {
		t.Errorf("Consumed(nil) = %v, %v: want task_queues", qs, err)
	}
}

// call is one AMQP declaration step, as testdata/topology.json records
// kombu's.
type call struct {
	Op         string         `json:"op"`
	Exchange   string         `json:"exchange,omitempty"`
	Type       string         `json:"type,omitempty"`
	Queue      string         `json:"queue,omitempty"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Exclusive  bool           `json:"exclusive"`
	RoutingKey string         `json:"routing_key"`
	Arguments  map[string]any `json:"arguments,omitempty"`
}

// calls spells what broker/amqp's Declare does for q (declareBindingsOn).
func calls(q broker.Queue) []call {
	exDecl := func(ex broker.Exchange) call {
		return call{Op: "exchange.declare", Exchange: ex.Name, Type: ex.Kind, Durable: !ex.Transient, AutoDelete: ex.AutoDelete}
	}
	out := []call{exDecl(q.Bindings[0].Exchange),
		{Op: "queue.declare", Queue: q.Name, Durable: !q.Transient, AutoDelete: q.AutoDelete, Exclusive: q.Exclusive, Arguments: q.Arguments}}
	for i, b := range q.Bindings {
		if i > 0 {
			out = append(out, exDecl(b.Exchange))
		}
		out = append(out, call{Op: "queue.bind", Queue: q.Name, Exchange: b.Exchange.Name, RoutingKey: b.RoutingKey, Arguments: b.Arguments})
	}
	return out
}

// normalize makes numbers comparable (JSON's float64 against Go's int)
// and orders a queue's binding steps, which kombu keeps in a set.
func normalize(t *testing.T, cs []call) string {
	t.Helper()
	data, err := json.Marshal(cs)
	if err != nil {
		t.Fatal(err)
	}
	var back []map[string]any
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range back {
		for k, v := range c {
			if m, ok := v.(map[string]any); ok && len(m) == 0 {
				delete(c, k)
			}
		}
		if c["op"] == "queue.declare" {
			c["exclusive"] = c["exclusive"] == true
		} else {
			delete(c, "exclusive")
		}
		b, _ := json.Marshal(c)
		lines = append(lines, string(b))
	}
	head := min(2, len(lines))
	rest := slices.Clone(lines[head:])
	slices.Sort(rest)
	rest = slices.Compact(rest)
	return strings.Join(append(lines[:head:head], rest...), "\n")
}

// TestDeclarationsEqualKombus compares Topology's declarations with what
// Celery 5.7 and kombu 5.7 declare for the same settings
// (testdata/topology.json, from interop/python/gen_topology_vectors.py).
func TestDeclarationsEqualKombus(t *testing.T) {
	data, err := os.ReadFile("testdata/topology.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name     string          `json:"name"`
		Config   json.RawMessage `json:"config"`
		Consume  []string        `json:"consume"`
		Declared []struct {
			Queue string `json:"queue"`
			Calls []call `json:"calls"`
		} `json:"declared"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			f, err := Parse(tc.Config) // JSON is YAML
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.Topology.Declared(tc.Consume)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.Declared) {
				t.Fatalf("%d queues, kombu has %d", len(got), len(tc.Declared))
			}
			for i, want := range tc.Declared {
				if got[i].Name != want.Queue {
					t.Errorf("queue %d is %q, kombu's is %q", i, got[i].Name, want.Queue)
					continue
				}
				g, w := normalize(t, calls(got[i])), normalize(t, want.Calls)
				if g != w {
					t.Errorf("queue %q:\ngocelery declares\n%s\nkombu declares\n%s", want.Queue, g, w)
				}
			}
		})
	}
}

func TestUsesQuorum(t *testing.T) {
	for _, tt := range []struct {
		yaml    string
		consume []string
		want    bool
	}{
		{"", []string{"celery"}, false},
		{"task_default_queue_type: quorum", nil, true},
		{"task_default_queue_type: quorum\ntask_queues: [{name: a}]", nil, false},
		{"task_create_missing_queue_type: quorum", []string{"x"}, true},
		{"task_queues: [{name: a, queue_arguments: {x-queue-type: quorum}}]", []string{"b"}, true},
	} {
		f, err := Parse([]byte(tt.yaml))
		if err != nil {
			t.Fatal(err)
		}
		qs, err := f.Topology.Declared(tt.consume)
		if err != nil {
			t.Fatal(err)
		}
		if got := UsesQuorum(qs); got != tt.want {
			t.Errorf("%q consuming %v: UsesQuorum = %t, want %t", tt.yaml, tt.consume, got, tt.want)
		}
	}
}

func ExampleParse() {
	f, err := Parse([]byte(`
broker_url: amqp://guest:guest@localhost:5672//
task_queues:
  - name: orders
    exchange: shop
    exchange_type: topic
    routing_key: orders.#
    queue_arguments: {x-queue-type: quorum}
`))
	if err != nil {
		panic(err)
	}
	q, _ := f.Topology.Queue("orders")
	fmt.Println(q.Name, q.Exchange, q.ExchangeType, q.RoutingKey, q.IsQuorum())
	// Output: orders shop topic orders.# true
}

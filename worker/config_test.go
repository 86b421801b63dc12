package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
)

const rabbitURL = "amqp://guest:guest@127.0.0.1:5672//"

func uniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigUnderFlags: the file gives the settings, flags and
// CELERY_BROKER_URL win over it.
func TestConfigUnderFlags(t *testing.T) {
	path := writeConfig(t, `
broker_url: [amqp://h1//, amqp://h2//]
broker_failover_strategy: shuffle
result_backend: rpc://
broker_transport_options: {confirm_publish: true, max_retries: 3}
result_backend_transport_options: {global_keyprefix: app}
result_expires: 60
worker_concurrency: 3
worker_prefetch_multiplier: 1
task_acks_late: true
task_track_started: true
task_default_queue: orders
task_queues: [{name: orders}, {name: audit}]
task_serializer: json
`)
	t.Setenv("CELERY_BROKER_URL", "")
	o, err := ParseFlags("worker", []string{"--config", path, "-c", "7", "--broker-transport-option", "max_retries=5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.Config
	if o.BrokerURL != "amqp://h1//;amqp://h2//" || o.BrokerFailoverStrategy != "shuffle" || o.ResultBackendURL != "rpc://" ||
		o.ResultExpires != time.Minute || c.Concurrency != 7 || c.PrefetchMultiplier != 1 || !c.AcksLate || !c.TrackStarted ||
		c.DefaultQueue != "orders" || o.ResultBackendTransportOptions["global_keyprefix"] != "app" {
		t.Errorf("options from the file: %+v", o)
	}
	if o.BrokerTransportOptions["max_retries"] != float64(5) || o.BrokerTransportOptions["confirm_publish"] != true {
		t.Errorf("transport options: %v (the flag wins per key)", o.BrokerTransportOptions)
	}
	if len(o.ConfigWarnings) != 1 || !strings.Contains(o.ConfigWarnings[0], "task_serializer") {
		t.Errorf("warnings: %q", o.ConfigWarnings)
	}
	// Without -Q, Celery consumes every queue of task_queues.
	plan, err := o.planTopology()
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.consumed) != 2 || plan.consumed[0].Name != "orders" || plan.consumed[1].Name != "audit" {
		t.Errorf("consumed: %+v", plan.consumed)
	}

	t.Setenv("CELERY_BROKER_URL", "amqp://env//")
	o, err = ParseFlags("worker", []string{"--config", path, "-Q", "audit"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.BrokerURL != "amqp://env//" {
		t.Errorf("CELERY_BROKER_URL should win over broker_url, got %q", o.BrokerURL)
	}
	o, err = ParseFlags("worker", []string{"--config", path, "-b", "amqp://flag//", "--prefetch-multiplier", "9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.BrokerURL != "amqp://flag//" || o.Config.PrefetchMultiplier != 9 {
		t.Errorf("flags should win: %q, %d", o.BrokerURL, o.Config.PrefetchMultiplier)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"worker_concurrency: many\n", "worker_concurrency: want an integer"},
		{"task_queue: [{name: a}]\n", `unknown setting "task_queue"`},
		{"task_create_missing_queues: false\ntask_queues: [{name: a}]\n", ""},
	} {
		path := writeConfig(t, tt.text)
		o, err := ParseFlags("worker", []string{"--config", path, "-Q", "b"}, io.Discard)
		if tt.want == "" {
			if err != nil {
				t.Fatal(err)
			}
			if _, err := o.planTopology(); err == nil || !strings.Contains(err.Error(), `"b"`) {
				t.Errorf("queue b missing from task_queues: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: got %v, want %q", tt.text, err, tt.want)
		}
	}
	if _, err := ParseFlags("worker", []string{"--config", filepath.Join(t.TempDir(), "none.yaml"), "-Q", "a"}, io.Discard); err == nil {
		t.Error("a missing config file is accepted")
	}
}

// TestMismatchStopsWorker: a queue RabbitMQ has with other arguments stops
// the worker with one line naming the queue, the argument, both values and
// the setting.
func TestMismatchStopsWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	conn, err := amqp091.Dial(rabbitURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	classic, quorum := uniqueName("mm_classic"), uniqueName("mm_quorum")
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			for _, q := range []string{classic, quorum} {
				_, _ = ch.QueueDelete(q, false, false, false)
				_ = ch.ExchangeDelete(q, false, false)
			}
			ch.Close()
		}
	})
	if err := ch.ExchangeDeclare(classic, "direct", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(classic, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(quorum, true, false, false, false, amqp091.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CELERY_BROKER_URL", "")
	for _, tt := range []struct {
		name, config, queue, want string
	}{
		{"quorum over classic", "task_queues: [{name: " + classic + ", queue_arguments: {x-queue-type: quorum}}]\n", classic,
			`queue "` + classic + `" exists on the broker with x-queue-type=(unset) but this worker declares x-queue-type='quorum': set queue_arguments x-queue-type in the task_queues entry "` + classic + `"`},
		{"classic over quorum", "task_default_queue: other\n", quorum,
			`queue "` + quorum + `" exists on the broker with x-queue-type='quorum' but this worker declares x-queue-type=(unset): list "` + quorum + `" in task_queues as the Python app declares it, or set task_default_queue_type / task_create_missing_queue_type`},
		{"priority", "task_queue_max_priority: 10\n", classic,
			`queue "` + classic + `" exists on the broker with x-max-priority=(unset) but this worker declares x-max-priority='10': list "` + classic + `" in task_queues as the Python app declares it, or set task_queue_max_priority`},
		{"exchange type", "task_queues: [{name: " + classic + ", exchange: " + classic + ", exchange_type: topic}]\n", classic,
			`exchange "` + classic + `" exists on the broker with type='direct' but this worker declares type='topic': set exchange_type of its task_queues entries (or task_default_exchange_type) as the Python app declares it`},
		{"durable", "task_queues: [{name: " + classic + ", durable: false}]\n", classic,
			`queue "` + classic + `" exists on the broker with durable='true' but this worker declares durable='false': set durable in the task_queues entry "` + classic + `"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, "broker_url: "+rabbitURL+"\n"+tt.config)
			var stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := Run(ctx, []string{"--config", path, "-Q", tt.queue, "--without-heartbeat"}, consumer.NewMux(), &stderr, nil)
			if err == nil {
				t.Fatal("the worker started on a mismatched queue")
			}
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Error("the message is more than one line")
			}
		})
	}
}

func TestRetryRoute(t *testing.T) {
	q := broker.Queue{Name: "orders", Bindings: []broker.Binding{{Exchange: broker.Exchange{Name: "shop", Kind: "topic"}, RoutingKey: "orders.#"}}}
	delayed := map[string]broker.Queue{"orders": q}
	prefix := "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1."
	for _, tt := range []struct {
		d         broker.Delivery
		countdown time.Duration
		ex, key   string
	}{
		{broker.Delivery{Queue: "orders", Exchange: "shop", RoutingKey: "orders.eu"}, 3 * time.Second, broker.DelayedEntryExchange, prefix + "orders.eu"},
		{broker.Delivery{Queue: "orders", Exchange: broker.DelayedDeliveryExchange, RoutingKey: prefix + "orders.eu"}, 2900 * time.Millisecond, broker.DelayedEntryExchange, prefix + "orders.eu"},
		{broker.Delivery{Queue: "orders", Exchange: "", RoutingKey: "orders"}, 3 * time.Second, broker.DelayedEntryExchange, prefix + "orders.#"},
		{broker.Delivery{Queue: "orders", Exchange: "shop", RoutingKey: "orders.eu"}, 900 * time.Millisecond, "shop", "orders.eu"},
		{broker.Delivery{Queue: "other", Exchange: "x", RoutingKey: "k"}, time.Minute, "x", "k"},
	} {
		ex, key := retryRoute(delayed, &tt.d, tt.countdown)
		if ex != tt.ex || key != tt.key {
			t.Errorf("retryRoute(%+v, %s) = %q %q, want %q %q", tt.d, tt.countdown, ex, key, tt.ex, tt.key)
		}
	}
}

func TestConfigFlagHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := ParseFlags("worker", []string{"-h"}, &out)
	if err != flag.ErrHelp || !strings.Contains(out.String(), "-config") {
		t.Errorf("help: %v\n%s", err, out.String())
	}
}

// Package config reads a Celery configuration written in YAML with
// Celery's own setting names, so that a team copies the values of its
// Python app's config (broker_url, task_queues, task_default_queue_type,
// ...) into worker.yaml:
//
//	broker_url: amqp://guest:guest@rabbit:5672//
//	result_backend: redis://redis:6379/0
//	task_default_queue: orders
//	task_queues:
//	  - name: orders
//	    exchange: shop
//	    exchange_type: topic
//	    routing_key: orders.#
//	    queue_arguments: {x-queue-type: quorum}
//	worker_prefetch_multiplier: 1
//	task_acks_late: true
//
// A key this package does not know is an error that names it; a key Celery
// has but gocelery does not use is a warning. Each entry of task_queues is
// a kombu.Queue, and Topology declares it as kombu does.
//
// The package reads the file and checks every value; the programs
// (package worker, gocelery beat, inspect and control) apply it under
// their flags.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrUnknownKey is wrapped by the error for a key that neither Celery nor
// gocelery knows (a typo, or an old uppercase name).
var ErrUnknownKey = errors.New("unknown setting")

// File is a parsed configuration file. Fields are Celery's settings;
// Has tells which ones the file sets.
type File struct {
	// Path is where the file was read from ("" for Parse).
	Path string
	// Warnings name the keys Celery has but gocelery ignores.
	Warnings []string

	// BrokerURL is broker_url; a YAML list is joined with ";" as Celery
	// joins a failover list.
	BrokerURL              string
	BrokerFailoverStrategy string         // broker_failover_strategy
	BrokerTransportOptions map[string]any // broker_transport_options
	// ResultBackend is result_backend, kept as written (redis://, rpc://,
	// ...): the program that opens it says which schemes it supports.
	ResultBackend                 string
	ResultBackendTransportOptions map[string]any // result_backend_transport_options
	ResultExpires                 time.Duration  // result_expires (seconds, or a Go duration "24h")
	ResultExtended                bool           // result_extended

	Topology Topology // task_queues and the queue defaults

	WorkerConcurrency          int  // worker_concurrency
	WorkerPrefetchMultiplier   int  // worker_prefetch_multiplier
	WorkerEtaTaskLimit         int  // worker_eta_task_limit
	WorkerSendTaskEvents       bool // worker_send_task_events
	WorkerStateDB              string
	TaskAcksLate               bool // task_acks_late
	TaskAcksOnFailureOrTimeout bool // task_acks_on_failure_or_timeout
	TaskRejectOnWorkerLost     bool // task_reject_on_worker_lost
	TaskTrackStarted           bool // task_track_started

	// RedbeatRedisURL and RedbeatKeyPrefix are celery-redbeat's settings
	// (gocelery beat keeps its schedule as redbeat does).
	RedbeatRedisURL  string
	RedbeatKeyPrefix string

	set map[string]bool
}

// Has reports whether the file sets key (a Celery setting name).
func (f *File) Has(key string) bool { return f.set[key] }

// Load reads and checks the YAML file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Path = path
	return f, nil
}

// setting decodes one key's value into the File.
type setting func(f *File, n *yaml.Node) error

// settings are the keys gocelery uses. Every other key of celerySettings
// is accepted with a warning.
var settings = map[string]setting{
	"broker_url": func(f *File, n *yaml.Node) error { return brokerURL(&f.BrokerURL, n) },
	"broker_failover_strategy": func(f *File, n *yaml.Node) error {
		return oneOf(&f.BrokerFailoverStrategy, n, "round-robin", "shuffle")
	},
	"broker_transport_options":         func(f *File, n *yaml.Node) error { return mapping(&f.BrokerTransportOptions, n) },
	"result_backend":                   func(f *File, n *yaml.Node) error { return str(&f.ResultBackend, n) },
	"result_backend_transport_options": func(f *File, n *yaml.Node) error { return mapping(&f.ResultBackendTransportOptions, n) },
	"result_expires":                   func(f *File, n *yaml.Node) error { return duration(&f.ResultExpires, n) },
	"result_extended":                  func(f *File, n *yaml.Node) error { return boolean(&f.ResultExtended, n) },
	"task_queues":                      func(f *File, n *yaml.Node) error { return queues(&f.Topology.Queues, n) },
	"task_default_queue":               func(f *File, n *yaml.Node) error { return name(&f.Topology.DefaultQueue, n) },
	"task_default_exchange":            func(f *File, n *yaml.Node) error { return name(&f.Topology.DefaultExchange, n) },
	"task_default_exchange_type":       func(f *File, n *yaml.Node) error { return exchangeType(&f.Topology.DefaultExchangeType, n) },
	"task_default_routing_key":         func(f *File, n *yaml.Node) error { return str(&f.Topology.DefaultRoutingKey, n) },
	"task_default_queue_type":          func(f *File, n *yaml.Node) error { return oneOf(&f.Topology.DefaultQueueType, n, "classic", "quorum") },
	"task_queue_max_priority": func(f *File, n *yaml.Node) error {
		f.Topology.MaxPriority = new(int)
		return integer(f.Topology.MaxPriority, n, 0, 255)
	},
	"task_create_missing_queues": func(f *File, n *yaml.Node) error { return boolean(&f.Topology.CreateMissingQueues, n) },
	"task_create_missing_queue_type": func(f *File, n *yaml.Node) error {
		return oneOf(&f.Topology.CreateMissingQueueType, n, "classic", "quorum")
	},
	"worker_detect_quorum_queues": func(f *File, n *yaml.Node) error { return boolean(&f.Topology.DetectQuorumQueues, n) },
	"task_create_missing_queue_exchange_type": func(f *File, n *yaml.Node) error {
		return exchangeType(&f.Topology.CreateMissingQueueExchangeType, n)
	},
	"broker_native_delayed_delivery_queue_type": func(f *File, n *yaml.Node) error {
		return oneOf(&f.Topology.DelayedDeliveryQueueType, n, "classic", "quorum")
	},
	"worker_concurrency":              func(f *File, n *yaml.Node) error { return integer(&f.WorkerConcurrency, n, 1, math.MaxInt32) },
	"worker_prefetch_multiplier":      func(f *File, n *yaml.Node) error { return integer(&f.WorkerPrefetchMultiplier, n, 0, math.MaxUint16) },
	"worker_eta_task_limit":           func(f *File, n *yaml.Node) error { return integer(&f.WorkerEtaTaskLimit, n, 1, math.MaxInt32) },
	"worker_send_task_events":         func(f *File, n *yaml.Node) error { return boolean(&f.WorkerSendTaskEvents, n) },
	"worker_state_db":                 func(f *File, n *yaml.Node) error { return str(&f.WorkerStateDB, n) },
	"task_acks_late":                  func(f *File, n *yaml.Node) error { return boolean(&f.TaskAcksLate, n) },
	"task_acks_on_failure_or_timeout": func(f *File, n *yaml.Node) error { return boolean(&f.TaskAcksOnFailureOrTimeout, n) },
	"task_reject_on_worker_lost":      func(f *File, n *yaml.Node) error { return boolean(&f.TaskRejectOnWorkerLost, n) },
	"task_track_started":              func(f *File, n *yaml.Node) error { return boolean(&f.TaskTrackStarted, n) },
	"redbeat_redis_url":               func(f *File, n *yaml.Node) error { return str(&f.RedbeatRedisURL, n) },
	"redbeat_key_prefix":              func(f *File, n *yaml.Node) error { return str(&f.RedbeatKeyPrefix, n) },
}

// Parse reads a configuration from YAML: a mapping of Celery setting
// names. An empty document is an empty configuration.
func Parse(data []byte) (*File, error) {
	f := &File{
		BrokerFailoverStrategy:     "round-robin",
		TaskAcksOnFailureOrTimeout: true,
		Topology:                   DefaultTopology(),
		set:                        make(map[string]bool),
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return f, nil
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(doc.Content) == 0 {
		return f, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config: line %d: want a mapping of Celery setting names", root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		if f.set[key] {
			return nil, fmt.Errorf("config: line %d: %s is set twice", k.Line, key)
		}
		f.set[key] = true
		decode, ok := settings[key]
		if !ok {
			if celerySettings[key] {
				f.Warnings = append(f.Warnings, fmt.Sprintf("line %d: %s is a Celery setting gocelery ignores", k.Line, key))
				continue
			}
			return nil, fmt.Errorf("config: line %d: %w %q (not a Celery 5.7 setting name: %s)", k.Line, ErrUnknownKey, key, hint(key))
		}
		if err := decode(f, v); err != nil {
			return nil, fmt.Errorf("config: line %d: %s: %w", v.Line, key, err)
		}
	}
	if err := f.Topology.check(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return f, nil
}

// hint suggests the setting a misspelt or old-style key means.
func hint(key string) string {
	lower := strings.ToLower(key)
	if celerySettings[lower] || settings[lower] != nil {
		return "write it in lowercase, " + lower
	}
	if s, ok := strings.CutPrefix(lower, "celery_"); ok {
		for _, cand := range []string{s, "task_" + s, "result_" + s, "worker_" + s} {
			if celerySettings[cand] {
				return "the new name is " + cand
			}
		}
	}
	best, dist := "", 4
	for s := range celerySettings {
		if d := levenshtein(lower, s); d < dist || (d == dist && s < best) {
			best, dist = s, d
		}
	}
	if best != "" {
		return "did you mean " + best + "?"
	}
	return "see https://docs.celeryq.dev/en/stable/userguide/configuration.html"
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func scalar(n *yaml.Node, what string) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want %s", what)
	}
	return nil
}

func str(dst *string, n *yaml.Node) error {
	if err := scalar(n, "a string"); err != nil {
		return err
	}
	if n.Tag == "!!null" {
		*dst = ""
		return nil
	}
	*dst = n.Value
	return nil
}

// name is a string that must not be empty (a queue or exchange name).
func name(dst *string, n *yaml.Node) error {
	if err := str(dst, n); err != nil {
		return err
	}
	if *dst == "" {
		return errors.New("want a name, got an empty string")
	}
	return nil
}

func oneOf(dst *string, n *yaml.Node, allowed ...string) error {
	if err := str(dst, n); err != nil {
		return err
	}
	if !slices.Contains(allowed, *dst) {
		return fmt.Errorf("want %s, got %q", strings.Join(allowed, " or "), *dst)
	}
	return nil
}

func exchangeType(dst *string, n *yaml.Node) error {
	return oneOf(dst, n, "direct", "topic", "fanout", "headers")
}

func boolean(dst *bool, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return fmt.Errorf("want true or false, got %q", n.Value)
	}
	return n.Decode(dst)
}

func integer(dst *int, n *yaml.Node, lo, hi int) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		return fmt.Errorf("want an integer, got %q", n.Value)
	}
	var v int
	if err := n.Decode(&v); err != nil {
		return err
	}
	if v < lo || v > hi {
		return fmt.Errorf("want %d to %d, got %d", lo, hi, v)
	}
	*dst = v
	return nil
}

// seconds reads a number of seconds (Celery's float settings).
func seconds(n *yaml.Node) (float64, error) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
		return 0, fmt.Errorf("want a number of seconds, got %q", n.Value)
	}
	var v float64
	if err := n.Decode(&v); err != nil {
		return 0, err
	}
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("want a number of seconds >= 0, got %q", n.Value)
	}
	return v, nil
}

// duration reads seconds (as Celery writes result_expires) or a Go
// duration string ("24h").
func duration(dst *time.Duration, n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		d, err := time.ParseDuration(n.Value)
		if err != nil || d < 0 {
			return fmt.Errorf("want seconds or a duration such as 24h, got %q", n.Value)
		}
		*dst = d
		return nil
	}
	s, err := seconds(n)
	if err != nil {
		return err
	}
	*dst = time.Duration(s * float64(time.Second))
	return nil
}

func mapping(dst *map[string]any, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return errors.New("want a mapping")
	}
	m := make(map[string]any)
	if err := n.Decode(&m); err != nil {
		return err
	}
	*dst = m
	return nil
}

// brokerURL reads a URL or a list of URLs (Celery's failover list), kept
// as the ";"-joined string Celery also accepts.
func brokerURL(dst *string, n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		return name(dst, n)
	case yaml.SequenceNode:
		var urls []string
		for _, c := range n.Content {
			var u string
			if err := name(&u, c); err != nil {
				return fmt.Errorf("list item at line %d: %w", c.Line, err)
			}
			urls = append(urls, u)
		}
		if len(urls) == 0 {
			return errors.New("want a URL or a list of URLs, got an empty list")
		}
		*dst = strings.Join(urls, ";")
		return nil
	}
	return errors.New("want a URL or a list of URLs")
}

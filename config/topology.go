package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/gocelery/gocelery/broker"
)

// ErrQueueNotFound is returned by Topology.Queue for a queue that
// task_queues does not list while task_create_missing_queues is false.
var ErrQueueNotFound = errors.New("config: queue missing from task_queues")

// Topology is Celery's queue settings: task_queues and the defaults kombu
// and Celery's Queues apply to them.
type Topology struct {
	Queues              []Queue // task_queues, in order
	DefaultQueue        string  // task_default_queue ("celery")
	DefaultExchange     string  // task_default_exchange ("" means DefaultQueue)
	DefaultExchangeType string  // task_default_exchange_type ("direct")
	DefaultRoutingKey   string  // task_default_routing_key ("" means DefaultQueue)
	DefaultQueueType    string  // task_default_queue_type: "classic" or "quorum"
	MaxPriority         *int    // task_queue_max_priority (nil: none)
	CreateMissingQueues bool    // task_create_missing_queues (true)
	// CreateMissingQueueType and CreateMissingQueueExchangeType are
	// Celery 5.5's task_create_missing_queue_type ("classic") and
	// task_create_missing_queue_exchange_type ("" means direct).
	CreateMissingQueueType         string
	CreateMissingQueueExchangeType string
	// DetectQuorumQueues is worker_detect_quorum_queues (true): with a
	// quorum queue the worker uses per-consumer QoS and a fixed prefetch.
	DetectQuorumQueues bool
	// DelayedDeliveryQueueType is broker_native_delayed_delivery_queue_type
	// ("quorum"), the type of the celery_delayed_* queues.
	DelayedDeliveryQueueType string
}

// DefaultTopology returns Celery 5.7's defaults.
func DefaultTopology() Topology {
	return Topology{
		DefaultQueue: "celery", DefaultExchangeType: "direct", DefaultQueueType: "classic",
		CreateMissingQueues: true, CreateMissingQueueType: "classic",
		DetectQuorumQueues: true, DelayedDeliveryQueueType: "quorum",
	}
}

// Queue is one entry of task_queues, with the arguments of the
// kombu.Queue(...) it stands for: Queue("orders", Exchange("shop",
// type="topic"), routing_key="orders.#", queue_arguments={...}) is
//
//	{name: orders, exchange: shop, exchange_type: topic, routing_key: orders.#, queue_arguments: {...}}
//
// An empty exchange or routing key takes Celery's defaults
// (task_default_exchange, task_default_routing_key), as it does for a
// kombu.Queue.
type Queue struct {
	Name               string         `yaml:"name"`
	Exchange           string         `yaml:"exchange"`
	ExchangeType       string         `yaml:"exchange_type"`        // Exchange(type=); "direct"
	ExchangeDurable    *bool          `yaml:"exchange_durable"`     // Exchange(durable=); true
	ExchangeAutoDelete bool           `yaml:"exchange_auto_delete"` // Exchange(auto_delete=)
	RoutingKey         string         `yaml:"routing_key"`
	QueueArguments     map[string]any `yaml:"queue_arguments"`
	BindingArguments   map[string]any `yaml:"binding_arguments"`
	Durable            *bool          `yaml:"durable"` // true
	AutoDelete         bool           `yaml:"auto_delete"`
	Exclusive          bool           `yaml:"exclusive"` // implies auto_delete, as in kombu
	// kombu.Queue's shortcuts for x-arguments; they win over
	// queue_arguments, as in kombu. Expires and MessageTTL are seconds.
	MaxPriority    *int     `yaml:"max_priority"`
	Expires        *float64 `yaml:"expires"`
	MessageTTL     *float64 `yaml:"message_ttl"`
	MaxLength      *int     `yaml:"max_length"`
	MaxLengthBytes *int     `yaml:"max_length_bytes"`
	// Bindings are kombu's Queue(name, bindings=[binding(Exchange(...),
	// routing_key=...), ...]). kombu then ignores exchange, and Celery
	// still binds the queue to the default exchange with the default
	// routing key first.
	Bindings []Binding `yaml:"bindings"`
}

// Binding is a kombu.binding.
type Binding struct {
	Exchange           string         `yaml:"exchange"`
	ExchangeType       string         `yaml:"exchange_type"`
	ExchangeDurable    *bool          `yaml:"exchange_durable"`
	ExchangeAutoDelete bool           `yaml:"exchange_auto_delete"`
	RoutingKey         string         `yaml:"routing_key"`
	Arguments          map[string]any `yaml:"arguments"`
}

var (
	queueKeys = []string{"name", "exchange", "exchange_type", "exchange_durable", "exchange_auto_delete",
		"routing_key", "queue_arguments", "binding_arguments", "durable", "auto_delete", "exclusive",
		"max_priority", "expires", "message_ttl", "max_length", "max_length_bytes", "bindings"}
	bindingKeys = []string{"exchange", "exchange_type", "exchange_durable", "exchange_auto_delete", "routing_key", "arguments"}
)

// queues reads task_queues: a list of queues, or a mapping of name to
// queue (Celery's dict form).
func queues(dst *[]Queue, n *yaml.Node) error {
	var items []*yaml.Node
	var names []string
	switch n.Kind {
	case yaml.SequenceNode:
		items = n.Content
		names = make([]string, len(items))
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			names = append(names, n.Content[i].Value)
			items = append(items, n.Content[i+1])
		}
	default:
		return errors.New("want a list of queues")
	}
	seen := make(map[string]bool)
	var out []Queue
	for i, item := range items {
		where := fmt.Sprintf("[%d]", i)
		if names[i] != "" {
			where = fmt.Sprintf("[%s]", names[i])
		}
		q, err := queueOf(item, names[i])
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if seen[q.Name] {
			return fmt.Errorf("%s: queue %q is listed twice", where, q.Name)
		}
		seen[q.Name] = true
		out = append(out, q)
	}
	*dst = out
	return nil
}

// checkKeys rejects the keys of mapping n not in allowed, naming them.
func checkKeys(n *yaml.Node, allowed []string) error {
	if n.Kind != yaml.MappingNode {
		return errors.New("want a mapping")
	}
	for i := 0; i < len(n.Content); i += 2 {
		if k := n.Content[i].Value; !slices.Contains(allowed, k) {
			return fmt.Errorf("line %d: %w %q (a queue takes %v)", n.Content[i].Line, ErrUnknownKey, k, allowed)
		}
	}
	return nil
}

func queueOf(n *yaml.Node, key string) (Queue, error) {
	var q Queue
	if err := checkKeys(n, queueKeys); err != nil {
		return q, err
	}
	for i := 0; i < len(n.Content); i += 2 {
		if n.Content[i].Value == "bindings" {
			for _, b := range n.Content[i+1].Content {
				if err := checkKeys(b, bindingKeys); err != nil {
					return q, fmt.Errorf("bindings: %w", err)
				}
			}
		}
	}
	if err := n.Decode(&q); err != nil {
		return q, err
	}
	if q.Name == "" {
		q.Name = key
	}
	switch {
	case q.Name == "":
		return q, errors.New("name: a queue needs a name")
	case key != "" && q.Name != key:
		return q, fmt.Errorf("name: %q differs from its key %q", q.Name, key)
	case q.Exchange != "" && len(q.Bindings) > 0:
		return q, errors.New("exchange and bindings: kombu ignores exchange when bindings are given; put it in bindings")
	}
	if err := checkType("exchange_type", q.ExchangeType); err != nil {
		return q, err
	}
	for i, b := range q.Bindings {
		if b.Exchange == "" {
			return q, fmt.Errorf("bindings[%d].exchange: a binding needs an exchange", i)
		}
		if err := checkType(fmt.Sprintf("bindings[%d].exchange_type", i), b.ExchangeType); err != nil {
			return q, err
		}
	}
	if q.MaxPriority != nil && (*q.MaxPriority < 0 || *q.MaxPriority > 255) {
		return q, fmt.Errorf("max_priority: want 0 to 255, got %d", *q.MaxPriority)
	}
	for _, v := range []struct {
		key string
		f   *float64
	}{{"expires", q.Expires}, {"message_ttl", q.MessageTTL}} {
		if v.f != nil && (*v.f < 0 || math.IsNaN(*v.f) || math.IsInf(*v.f, 0)) {
			return q, fmt.Errorf("%s: want seconds >= 0, got %v", v.key, *v.f)
		}
	}
	for _, v := range []struct {
		key string
		i   *int
	}{{"max_length", q.MaxLength}, {"max_length_bytes", q.MaxLengthBytes}} {
		if v.i != nil && *v.i < 0 {
			return q, fmt.Errorf("%s: want >= 0, got %d", v.key, *v.i)
		}
	}
	if t, ok := q.QueueArguments["x-queue-type"]; ok {
		if s, _ := t.(string); s != "classic" && s != "quorum" && s != "stream" {
			return q, fmt.Errorf("queue_arguments: x-queue-type: want classic, quorum or stream, got %v", t)
		}
	}
	return q, nil
}

func checkType(key, t string) error {
	switch t {
	case "", "direct", "topic", "fanout", "headers":
		return nil
	}
	return fmt.Errorf("%s: want direct, topic, fanout or headers, got %q", key, t)
}

func (t *Topology) check() error {
	if t.DefaultQueueType != "classic" && t.DefaultQueueType != "quorum" {
		return fmt.Errorf("task_default_queue_type: want classic or quorum, got %q", t.DefaultQueueType)
	}
	return nil
}

func (t *Topology) defaultExchange() broker.Exchange {
	name := t.DefaultExchange
	if name == "" {
		name = t.DefaultQueue
	}
	kind := t.DefaultExchangeType
	if kind == "" {
		kind = "direct"
	}
	return broker.Exchange{Name: name, Kind: kind}
}

func (t *Topology) defaultRoutingKey() string {
	if t.DefaultRoutingKey != "" {
		return t.DefaultRoutingKey
	}
	return t.DefaultQueue
}

// listed returns task_queues, or Celery's default queue when it is empty
// (Queue(task_default_queue, default exchange, default routing key), a
// quorum queue with task_default_queue_type: quorum).
func (t *Topology) listed() []Queue {
	if len(t.Queues) > 0 || t.DefaultQueue == "" {
		return t.Queues
	}
	q := Queue{Name: t.DefaultQueue}
	if t.DefaultQueueType == "quorum" {
		q.QueueArguments = map[string]any{"x-queue-type": "quorum"}
	}
	return []Queue{q}
}

// Queue returns the declaration of the queue called name as a Celery app
// with these settings declares it: from task_queues (or the default
// queue), else, with task_create_missing_queues, Celery's missing queue
// (a direct exchange and routing key of its name). Otherwise the error
// wraps ErrQueueNotFound.
func (t *Topology) Queue(name string) (broker.Queue, error) {
	for _, q := range t.listed() {
		if q.Name == name {
			return t.declaration(q), nil
		}
	}
	if !t.CreateMissingQueues {
		return broker.Queue{}, fmt.Errorf("%w: %q (task_create_missing_queues is false)", ErrQueueNotFound, name)
	}
	return t.missing(name), nil
}

// Listed returns the declaration of a queue named in task_queues (or the
// default queue), as Celery's add_consumer takes it from app.amqp.queues.
func (t *Topology) Listed(name string) (broker.Queue, bool) {
	for _, q := range t.listed() {
		if q.Name == name {
			return t.declaration(q), true
		}
	}
	return broker.Queue{}, false
}

// missing is Celery's Queues.new_missing.
func (t *Topology) missing(name string) broker.Queue {
	kind := t.CreateMissingQueueExchangeType
	if kind == "" {
		kind = "direct"
	}
	q := Queue{Name: name, Exchange: name, ExchangeType: kind, RoutingKey: name}
	if t.CreateMissingQueueType == "quorum" {
		q.QueueArguments = map[string]any{"x-queue-type": "quorum"}
	}
	return t.declaration(q)
}

// Declared returns every queue a Celery worker of these settings consuming
// consume has in app.amqp.queues: task_queues (or the default queue) and
// the missing queues consume adds. Celery looks for quorum queues, and
// binds queues for native delayed delivery, among all of them.
func (t *Topology) Declared(consume []string) ([]broker.Queue, error) {
	var out []broker.Queue
	names := make(map[string]bool)
	for _, q := range t.listed() {
		out = append(out, t.declaration(q))
		names[q.Name] = true
	}
	for _, n := range consume {
		if names[n] {
			continue
		}
		q, err := t.Queue(n)
		if err != nil {
			return nil, err
		}
		out = append(out, q)
		names[n] = true
	}
	return out, nil
}

// Consumed returns the queues a worker consumes: consume, or without
// names every queue of task_queues (Celery's worker without -Q).
func (t *Topology) Consumed(consume []string) ([]broker.Queue, error) {
	if len(consume) == 0 {
		for _, q := range t.listed() {
			consume = append(consume, q.Name)
		}
	}
	out := make([]broker.Queue, 0, len(consume))
	for _, n := range consume {
		q, err := t.Queue(n)
		if err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	return out, nil
}

// UsesQuorum reports whether any of qs is a quorum queue, as Celery's
// detect_quorum_queues asks.
func UsesQuorum(qs []broker.Queue) bool {
	return slices.ContainsFunc(qs, broker.Queue.IsQuorum)
}

func exchangeOf(name, kind string, durable *bool, autoDelete bool) broker.Exchange {
	if kind == "" {
		kind = "direct"
	}
	return broker.Exchange{Name: name, Kind: kind, Transient: durable != nil && !*durable, AutoDelete: autoDelete}
}

// declaration is what kombu declares for q once Celery's Queues has added
// it: the default exchange for a queue without one (or with bindings),
// the default routing key for an empty one, task_queue_max_priority unless
// queue_arguments has x-max-priority, then kombu.Queue's own x-argument
// shortcuts.
func (t *Topology) declaration(q Queue) broker.Queue {
	ex := exchangeOf(q.Exchange, q.ExchangeType, q.ExchangeDurable, q.ExchangeAutoDelete)
	if q.Exchange == "" {
		ex = t.defaultExchange()
	}
	rk := q.RoutingKey
	if rk == "" {
		rk = t.defaultRoutingKey()
	}
	args := maps.Clone(q.QueueArguments)
	if args == nil {
		args = make(map[string]any)
	}
	if _, ok := args["x-max-priority"]; !ok && t.MaxPriority != nil {
		args["x-max-priority"] = *t.MaxPriority
	}
	// kombu's to_rabbitmq_queue_arguments: seconds to int milliseconds.
	if q.Expires != nil {
		args["x-expires"] = int(*q.Expires * 1000)
	}
	if q.MessageTTL != nil {
		args["x-message-ttl"] = int(*q.MessageTTL * 1000)
	}
	if q.MaxLength != nil {
		args["x-max-length"] = *q.MaxLength
	}
	if q.MaxLengthBytes != nil {
		args["x-max-length-bytes"] = *q.MaxLengthBytes
	}
	if q.MaxPriority != nil {
		args["x-max-priority"] = *q.MaxPriority
	}
	if len(args) == 0 {
		args = nil
	}
	bq := broker.Queue{
		Name: q.Name, Exchange: ex.Name, ExchangeType: ex.Kind, RoutingKey: rk,
		Transient:  q.Durable != nil && !*q.Durable,
		AutoDelete: q.AutoDelete || q.Exclusive, Exclusive: q.Exclusive,
		Arguments: args,
		Bindings:  []broker.Binding{{Exchange: ex, RoutingKey: rk, Arguments: q.BindingArguments}},
	}
	for _, b := range q.Bindings {
		bq.Bindings = append(bq.Bindings, broker.Binding{
			Exchange:   exchangeOf(b.Exchange, b.ExchangeType, b.ExchangeDurable, b.ExchangeAutoDelete),
			RoutingKey: b.RoutingKey, Arguments: b.Arguments,
		})
	}
	return bq
}

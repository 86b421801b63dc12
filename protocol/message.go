package protocol

import (
	"context"
	"time"
)

// Content types of the serializers Celery offers.
const (
	ContentTypeJSON    = "application/json"
	ContentTypeMsgpack = "application/x-msgpack"
	ContentTypeYAML    = "application/x-yaml"
	ContentTypePickle  = "application/x-python-serialize"
)

// Raw is a broker message as a transport hands it over or takes it: the
// parts Celery puts on the wire, independent of AMQP or Redis.
type Raw struct {
	ContentType     string
	ContentEncoding string
	// Headers is the AMQP application_headers table, or the Redis
	// envelope's "headers" object. Values are the types this package
	// decodes JSON to; transports convert their own table types first.
	Headers    map[string]any
	Properties Properties
	Body       []byte
}

// Properties are the message properties Celery sets.
type Properties struct {
	CorrelationID string // the task id
	ReplyTo       string
	DeliveryMode  int // 2 = persistent
	Priority      int
	// Expiration is the per-message TTL in milliseconds, as a decimal
	// string; only RabbitMQ enforces it.
	Expiration string
	// Extra keeps properties with no field here (a retry's "origin").
	Extra map[string]any
}

// TimeLimit holds a task's limits as Celery's "timelimit" header carries
// them: [hard, soft]. Zero means no limit.
type TimeLimit struct {
	Hard time.Duration
	Soft time.Duration
}

// Message is one task request, whichever protocol version carried it.
type Message struct {
	Protocol int // 1 or 2

	ID     string
	Task   string
	Args   []any
	Kwargs map[string]any

	ETA       time.Time // zero when the task is due now
	Expires   time.Time // zero when it never expires
	Retries   int
	TimeLimit TimeLimit

	RootID     string
	ParentID   string
	Group      string
	GroupIndex *int // position in the group; nil outside a group
	Shadow     string

	IgnoreResult        bool
	Lang                string
	Origin              string
	ArgsRepr            string
	KwargsRepr          string
	ReplacedTaskNesting int
	StampedHeaders      []string
	Stamps              map[string]any
	// Headers holds the headers Celery itself does not define (the
	// apply_async(headers=...) entries), so they can be read and resent.
	Headers map[string]any

	// The embed: what runs after this task.
	Callbacks []Signature // link
	Errbacks  []Signature // link_error
	Chain     []Signature // remaining chain steps, reversed: the next is last
	Chord     *Signature  // chord body, when this task is in a chord header

	Properties      Properties
	ContentType     string
	ContentEncoding string
	Compression     string // MIME type of the body's compression, or ""
}

// Name returns the name to show in logs and events: the shadow name when
// set, else the task name, as Celery's Request.name does.
func (m *Message) Name() string {
	if m.Shadow != "" {
		return m.Shadow
	}
	return m.Task
}

// standardHeaders are the v2 headers with a field in Message; any other
// header is a custom one.
var standardHeaders = map[string]bool{
	"lang": true, "task": true, "id": true, "shadow": true, "eta": true,
	"expires": true, "group": true, "group_index": true, "retries": true,
	"timelimit": true, "root_id": true, "parent_id": true, "argsrepr": true,
	"kwargsrepr": true, "origin": true, "ignore_result": true,
	"replaced_task_nesting": true, "stamped_headers": true, "stamps": true,
	"compression": true, "meth": true,
}

// IsStandardHeader reports whether Celery's protocol v2 defines the header.
func IsStandardHeader(name string) bool { return standardHeaders[name] }

type messageKey struct{}

// WithMessage returns ctx carrying m, the task message being executed. A
// worker sets it for its handlers so that tasks sent from inside a task
// get it as parent, as Celery's current_worker_task does.
func WithMessage(ctx context.Context, m *Message) context.Context {
	return context.WithValue(ctx, messageKey{}, m)
}

// MessageFrom returns the task message carried by ctx, or nil.
func MessageFrom(ctx context.Context) *Message {
	m, _ := ctx.Value(messageKey{}).(*Message)
	return m
}

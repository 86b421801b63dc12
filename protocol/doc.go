// Package protocol converts between Celery task messages as they travel on a
// broker and Go values. It is pure: no network or disk I/O, and it imports
// nothing else of this module, so brokers, workers and producers can share it.
//
// A broker delivers a [Raw] message (content type, headers, properties, body).
// [Decode] turns it into a [Message], detecting protocol v1 or v2 exactly as a
// Celery worker does (a "task" header means v2). [Encode] builds the [Raw]
// message a Python producer's send_task would publish.
//
// Values inside args, kwargs and results use this mapping:
//
//	JSON / msgpack            Go
//	null / nil                nil
//	true, false               bool
//	integer                   int64, or *big.Int beyond 64 bits
//	float, NaN, Infinity      float64
//	string                    string
//	array                     []any
//	object / map              map[string]any
//	kombu "datetime"          time.Time (naive values are taken as UTC)
//	kombu "date"              Date
//	kombu "time"              TimeOfDay
//	kombu "decimal"           Decimal
//	kombu "uuid"              uuid.UUID
//	kombu "bytes", "base64"   []byte (msgpack bin too)
//
// Pickle and YAML payloads are refused with an [*ContentTypeError]: pickle is
// never deserialized.
package protocol

// Package results stores and reads task states in Redis exactly as Celery's
// Redis result backend does, so Python clients (AsyncResult.get, .state,
// .info) read what a Go worker writes, and Go clients read what a Python
// worker writes.
//
// A task's state lives in one string key, celery-task-meta-<task id>,
// holding kombu JSON in Python's json.dumps format with the keys in the
// order Celery writes them. Every write is a SETEX (or a plain SET when
// results never expire) and a PUBLISH of the same bytes on a channel named
// after the key, in one MULTI/EXEC. A missing key means PENDING. Once a
// task's state is SUCCESS it is never overwritten, which protects a result
// from a duplicate delivery of the same task.
//
// All JSON goes through the protocol package's kombu encoder, so values of
// the types it knows (time.Time, protocol.Decimal, uuid.UUID, []byte, ...)
// travel with kombu's type tags and come back as the same Go types. Go maps
// have no order, so their keys are written sorted; use [Dict] where the
// order of an object's keys must match what Python writes.
//
// Celery's rpc:// backend is here too: [RPC] is the worker side, which
// publishes each state to the task message's reply_to queue instead of
// storing it, and [ReplyQueue] the client side, which declares that queue
// and reads the states from it.
package results

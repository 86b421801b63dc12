package results

import (
	"errors"

	"github.com/gocelery/gocelery/protocol"
)

// Exception is a Python exception as Celery serializes it with a non-pickle
// serializer: {"exc_type": ..., "exc_message": [...], "exc_module": ...}.
// Python clients rebuild it by looking up Module in sys.modules and Type in
// that module, then calling the class with Message as positional args. A
// name they cannot resolve becomes a synthesized exception class of that
// name, but a name that resolves to something other than an exception class
// makes them raise SecurityError, so Module/Type must name a real exception
// class or a module Python clients never import (such as "go").
type Exception struct {
	// Type is the class's __qualname__ ("ValueError", "Outer.Inner").
	Type string
	// Message is the exception's args; nil is written as [].
	Message []any
	// Module is the class's __module__ ("builtins", "celery.exceptions").
	Module string
}

// Error renders the exception as the last line of a Python traceback does:
// "ValueError: bad", "celery.exceptions.TaskRevokedError: revoked", or just
// the type when str(exc) would be empty.
func (e *Exception) Error() string {
	name := e.Type
	if e.Module != "" && e.Module != "builtins" && e.Module != "__main__" {
		name = e.Module + "." + e.Type
	}
	if s := e.str(); s != "" {
		return name + ": " + s
	}
	return name
}

// str is Python's str(exc) for BaseException: empty for no args, str of
// the only arg, else repr of the args tuple. KeyError (and Celery's
// NotRegistered, a KeyError) use repr even for one arg.
func (e *Exception) str() string {
	switch len(e.Message) {
	case 0:
		return ""
	case 1:
		s, isStr := e.Message[0].(string)
		if isStr && !e.keyError() {
			return s
		}
		return protocol.Repr(e.Message[0])
	}
	return protocol.ReprArgs(e.Message)
}

func (e *Exception) keyError() bool {
	return (e.Module == "builtins" && e.Type == "KeyError") ||
		(e.Module == "celery.exceptions" && e.Type == "NotRegistered")
}

// PythonError is implemented by Go errors that know which Python exception
// they stand for; [ExceptionFrom] stores them under that class with
// Error() as the message.
type PythonError interface {
	error
	PythonException() (module, typ string)
}

// ExceptionFrom converts a Go error into the exception to store for it:
// an [*Exception] found with errors.As is returned as is; an error
// implementing [PythonError] keeps its module and type with [err.Error()]
// as the message; any other error becomes builtins.RuntimeError, which every
// Python client can rebuild. A nil error gives nil.
func ExceptionFrom(err error) *Exception {
	if err == nil {
		return nil
	}
	var exc *Exception
	if errors.As(err, &exc) && exc != nil {
		return exc
	}
	var pe PythonError
	if errors.As(err, &pe) {
		module, typ := pe.PythonException()
		if typ != "" {
			if module == "" {
				module = "builtins"
			}
			return &Exception{Type: typ, Message: []any{err.Error()}, Module: module}
		}
	}
	return &Exception{Type: "RuntimeError", Message: []any{err.Error()}, Module: "builtins"}
}

// NotRegistered is what a worker stores (FAILURE) for a message naming a
// task it does not have.
func NotRegistered(name string) *Exception {
	return &Exception{Type: "NotRegistered", Message: []any{name}, Module: "celery.exceptions"}
}

// TaskRevokedError is what a worker stores (REVOKED) for a revoked task;
// reason is "revoked", "expired" or "terminated".
func TaskRevokedError(reason string) *Exception {
	return &Exception{Type: "TaskRevokedError", Message: []any{reason}, Module: "celery.exceptions"}
}

// TimeLimitExceeded is what a worker stores (FAILURE) when a task hits its
// hard time limit. The class lives in billiard, which celery.exceptions
// re-exports.
func TimeLimitExceeded(seconds float64) *Exception {
	return &Exception{Type: "TimeLimitExceeded", Message: []any{seconds}, Module: "billiard.exceptions"}
}

// WorkerLostError is what a worker stores (FAILURE) when the process
// running a task died.
func WorkerLostError(msg string) *Exception {
	return &Exception{Type: "WorkerLostError", Message: []any{msg}, Module: "billiard.exceptions"}
}

// Reject is what Celery 5.7 stores (FAILURE) when a task raises
// Reject(reason, requeue); Celery 5.6 and older store nothing.
func Reject(reason any, requeue bool) *Exception {
	return &Exception{Type: "Reject", Message: []any{reason, requeue}, Module: "celery.exceptions"}
}

// AppendKombuJSON writes e as Celery's exception dict, in its key order
// (protocol.JSONAppender).
func (e *Exception) AppendKombuJSON(b []byte, depth int) ([]byte, error) {
	if e == nil {
		return append(b, "null"...), nil
	}
	return appendException(b, e, depth)
}

// appendException writes e in Celery's key order.
func appendException(b []byte, e *Exception, depth int) ([]byte, error) {
	b = append(b, `{"exc_type": `...)
	b = appendString(b, e.Type)
	b = append(b, `, "exc_message": `...)
	msg := e.Message
	if msg == nil {
		msg = []any{}
	}
	b, err := appendValue(b, msg, depth+1)
	if err != nil {
		return nil, err
	}
	b = append(b, `, "exc_module": `...)
	b = appendString(b, e.Module)
	return append(b, '}'), nil
}

// exceptionFromDict rebuilds an exception dict as Celery's
// exception_to_python reads it: exc_type is required, a non-list
// exc_message is a single argument.
func exceptionFromDict(v any) (*Exception, bool) {
	d, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	typ, ok := d["exc_type"].(string)
	if !ok || typ == "" {
		return nil, false
	}
	e := &Exception{Type: typ}
	e.Module, _ = d["exc_module"].(string)
	switch m := d["exc_message"].(type) {
	case nil:
	case []any:
		e.Message = m
	default:
		e.Message = []any{m}
	}
	return e, true
}

package results_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/gocelery/gocelery/results"
)

func TestStates(t *testing.T) {
	tests := []struct {
		state            string
		ready, exception bool
	}{
		{results.Pending, false, false},
		{results.Received, false, false},
		{results.Started, false, false},
		{results.Success, true, false},
		{results.Failure, true, true},
		{results.Revoked, true, true},
		{results.Rejected, false, false},
		{results.Retry, false, true},
		{results.Ignored, false, false},
		{"PROGRESS", false, false},
		{"", false, false},
	}
	for _, tc := range tests {
		if got := results.IsReady(tc.state); got != tc.ready {
			t.Errorf("IsReady(%q) = %v, want %v", tc.state, got, tc.ready)
		}
		if got := results.IsException(tc.state); got != tc.exception {
			t.Errorf("IsException(%q) = %v, want %v", tc.state, got, tc.exception)
		}
	}
}

func TestExceptionError(t *testing.T) {
	tests := []struct {
		exc  *results.Exception
		want string
	}{
		{&results.Exception{Type: "ValueError", Message: []any{"bad"}, Module: "builtins"}, "ValueError: bad"},
		{&results.Exception{Type: "ValueError", Message: []any{"bad", int64(42)}, Module: "builtins"}, "ValueError: ('bad', 42)"},
		{&results.Exception{Type: "ValueError", Module: "builtins"}, "ValueError"},
		{&results.Exception{Type: "ValueError", Message: []any{""}, Module: "builtins"}, "ValueError"},
		{&results.Exception{Type: "ValueError", Message: []any{int64(7)}, Module: "builtins"}, "ValueError: 7"},
		{&results.Exception{Type: "KeyError", Message: []any{"boom"}, Module: "builtins"}, "KeyError: 'boom'"},
		{&results.Exception{Type: "Outer.Inner", Message: []any{"x"}, Module: "proj.errors"}, "proj.errors.Outer.Inner: x"},
		{&results.Exception{Type: "Custom", Message: []any{"x"}}, "Custom: x"},
		{results.TaskRevokedError("revoked"), "celery.exceptions.TaskRevokedError: revoked"},
		{results.NotRegistered("tasks.nope"), "celery.exceptions.NotRegistered: 'tasks.nope'"},
		{results.TimeLimitExceeded(30), "billiard.exceptions.TimeLimitExceeded: 30.0"},
		{results.Reject("nope", false), "celery.exceptions.Reject: ('nope', False)"},
	}
	for _, tc := range tests {
		if got := tc.exc.Error(); got != tc.want {
			t.Errorf("%#v.Error() = %q, want %q", tc.exc, got, tc.want)
		}
	}
}

// pyErr is a Go error that says which Python exception it stands for.
type pyErr struct{ module, typ, msg string }

func (e pyErr) Error() string                         { return e.msg }
func (e pyErr) PythonException() (module, typ string) { return e.module, e.typ }

func TestExceptionFrom(t *testing.T) {
	stored := &results.Exception{Type: "ValueError", Message: []any{"v"}, Module: "builtins"}
	tests := []struct {
		name string
		err  error
		want *results.Exception
	}{
		{"nil", nil, nil},
		{"exception", stored, stored},
		{"wrapped exception", fmt.Errorf("task: %w", stored), stored},
		{"python error", pyErr{"proj.errors", "QuotaError", "over quota"},
			&results.Exception{Type: "QuotaError", Message: []any{"over quota"}, Module: "proj.errors"}},
		{"wrapped python error", fmt.Errorf("ctx: %w", pyErr{"", "ValueError", "bad"}),
			&results.Exception{Type: "ValueError", Message: []any{"ctx: bad"}, Module: "builtins"}},
		{"plain error", errors.New("disk full"),
			&results.Exception{Type: "RuntimeError", Message: []any{"disk full"}, Module: "builtins"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := results.ExceptionFrom(tc.err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ExceptionFrom = %#v, want %#v", got, tc.want)
			}
		})
	}
}

// TestExceptionHelpers pins the names the worker writes to the reference
// table (result-backend.md §4).
func TestExceptionHelpers(t *testing.T) {
	tests := []struct {
		got  *results.Exception
		want results.Exception
	}{
		{results.NotRegistered("tasks.nonexistent"), results.Exception{Type: "NotRegistered", Message: []any{"tasks.nonexistent"}, Module: "celery.exceptions"}},
		{results.TaskRevokedError("expired"), results.Exception{Type: "TaskRevokedError", Message: []any{"expired"}, Module: "celery.exceptions"}},
		{results.TimeLimitExceeded(1.5), results.Exception{Type: "TimeLimitExceeded", Message: []any{1.5}, Module: "billiard.exceptions"}},
		{results.WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 0."),
			results.Exception{Type: "WorkerLostError", Message: []any{"Worker exited prematurely: signal 9 (SIGKILL) Job: 0."}, Module: "billiard.exceptions"}},
		{results.Reject("nope", false), results.Exception{Type: "Reject", Message: []any{"nope", false}, Module: "celery.exceptions"}},
	}
	for _, tc := range tests {
		if !reflect.DeepEqual(*tc.got, tc.want) {
			t.Errorf("got %#v, want %#v", *tc.got, tc.want)
		}
	}
}

func TestMetaErr(t *testing.T) {
	exc := results.TaskRevokedError("terminated")
	tests := []struct {
		meta results.Meta
		want error
	}{
		{results.Meta{Status: results.Success, Result: 1}, nil},
		{results.Meta{Status: results.Retry, Result: exc}, nil},
		{results.Meta{Status: results.Revoked, Result: exc}, exc},
		{results.Meta{Status: results.Failure, Result: exc}, exc},
	}
	for _, tc := range tests {
		if got := tc.meta.Err(); got != tc.want {
			t.Errorf("%s: Err() = %v, want %v", tc.meta.Status, got, tc.want)
		}
	}
	odd := results.Meta{Status: results.Failure, Result: "not an exception"}
	if err := odd.Err(); err == nil {
		t.Error("FAILURE without an exception dict gave no error")
	}
}

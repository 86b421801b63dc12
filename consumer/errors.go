package consumer

import (
	"errors"
	"fmt"
	"time"
)

// ErrIgnore, returned by a handler, acks the message and stores nothing,
// like raising celery.exceptions.Ignore.
var ErrIgnore = errors.New("consumer: ignore task")

// RetryError asks the worker to retry the task: the same task id is
// republished with retries+1 and an ETA, RETRY is stored, and the current
// message is acked. Build it with Retry.
type RetryError struct {
	Countdown time.Duration // used when ETA is zero
	ETA       time.Time
	// MaxRetries overrides the task's limit for this call; nil keeps it.
	MaxRetries *int
	// Err is the reason, stored as the RETRY result and, once retries are
	// exhausted, as the FAILURE.
	Err error
	// Args and Kwargs replace the task's arguments when non-nil.
	Args   []any
	Kwargs map[string]any
}

func (e *RetryError) Error() string {
	if e.Err != nil {
		return "retry: " + e.Err.Error()
	}
	return "retry"
}

// Unwrap returns the reason.
func (e *RetryError) Unwrap() error { return e.Err }

// Retry returns a *RetryError for the handler to return, retrying after
// countdown (0 means the task's DefaultRetryDelay) because of err.
func Retry(countdown time.Duration, err error) *RetryError {
	return &RetryError{Countdown: countdown, Err: err}
}

// RejectError asks the worker to reject the message, as raising
// celery.exceptions.Reject does: with requeue it goes back to the queue,
// else it is dropped (or dead-lettered by the broker) and FAILURE stored.
// Only meaningful for late-ack tasks: an early-acked message is gone.
type RejectError struct {
	Reason  string
	Requeue bool
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("reject (requeue=%t): %s", e.Requeue, e.Reason)
}

// MaxRetriesExceededError is stored when Retry is called past the limit
// without a reason error, as in Celery.
type MaxRetriesExceededError struct {
	Task string
	ID   string
	Max  int
}

func (e *MaxRetriesExceededError) Error() string {
	return fmt.Sprintf("Can't retry %s[%s] args:... kwargs:...", e.Task, e.ID)
}

// PythonException names the Python class Celery clients re-raise.
func (e *MaxRetriesExceededError) PythonException() (module, typ string) {
	return "celery.exceptions", "MaxRetriesExceededError"
}

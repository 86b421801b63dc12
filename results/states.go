package results

// Task states, as in celery/states.py. Any other string is a valid custom
// state (for example "PROGRESS" from Task.update_state); custom states are
// neither ready nor exception states.
const (
	// Pending is the state of an unknown task: nothing is ever stored for
	// it, a missing key reads as Pending.
	Pending = "PENDING"
	// Received is only sent as an event; it is never stored.
	Received = "RECEIVED"
	// Started is stored when task_track_started is on.
	Started = "STARTED"
	// Success is final and is never overwritten.
	Success = "SUCCESS"
	// Failure holds an exception as the result.
	Failure = "FAILURE"
	// Revoked holds a TaskRevokedError as the result.
	Revoked = "REVOKED"
	// Rejected is only sent as an event; it is never stored.
	Rejected = "REJECTED"
	// Retry holds the exception that caused the retry as the result.
	Retry = "RETRY"
	// Ignored is never stored: the task raised celery.exceptions.Ignore.
	Ignored = "IGNORED"
)

// IsReady reports whether state is final (Celery's READY_STATES): a client
// waiting for a result stops at these.
func IsReady(state string) bool {
	switch state {
	case Success, Failure, Revoked:
		return true
	}
	return false
}

// IsException reports whether a result in this state is an exception
// (Celery's EXCEPTION_STATES), so readers decode it into an [*Exception].
func IsException(state string) bool {
	switch state {
	case Retry, Failure, Revoked:
		return true
	}
	return false
}

// isPropagate reports whether a client waiting for the result should see
// the exception as the task's error (Celery's PROPAGATE_STATES).
func isPropagate(state string) bool {
	return state == Failure || state == Revoked
}

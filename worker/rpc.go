package worker

import "strings"

// isRPC reports whether a result backend URL names Celery's rpc://
// backend, which sends states to each task's reply_to queue on the broker
// instead of storing them ("rpc" alone is Celery's alias too).
func isRPC(url string) bool {
	return url == "rpc" || strings.HasPrefix(url, "rpc://")
}

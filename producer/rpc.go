package producer

// replier is a result backend whose states come back on a queue of the
// producer's own (rpc://, *results.ReplyQueue).
type replier interface {
	ReplyTo() string
}

// replyTo is the task's reply_to: the ReplyTo option, else the backend's
// reply queue, as Celery's producer sends every task with reply_to set to
// the app's oid, where RPCBackend consumes.
func (p *Producer) replyTo(o *Options) string {
	if o.ReplyTo != "" {
		return o.ReplyTo
	}
	if r, ok := p.backend.(replier); ok {
		return r.ReplyTo()
	}
	return ""
}

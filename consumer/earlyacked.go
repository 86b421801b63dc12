package consumer

import "sync"

// earlyAckedCap bounds the attempts remembered: only those whose early ack
// was in flight at a connection drop come back, at most the prefetch of
// the lost channel.
const earlyAckedCap = 4096

// attempt names one run of a task: a retry is a new message with the same
// id and one more retry.
type attempt struct {
	id      string
	retries int
}

// earlyAckedSet remembers the last attempts this worker early-acked. A message
// the broker redelivers whose attempt is here lost its ack with the
// connection (RabbitMQ does not confirm acks) and has run, or is running,
// here: an early ack means at most once, so the copy is acked, not run.
// Celery runs such copies again.
type earlyAckedSet struct {
	mu   sync.Mutex
	set  map[attempt]struct{}
	ring []attempt
	next int
}

func (s *earlyAckedSet) add(a attempt) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = make(map[attempt]struct{}, earlyAckedCap)
		s.ring = make([]attempt, earlyAckedCap)
	}
	if _, ok := s.set[a]; ok {
		return
	}
	delete(s.set, s.ring[s.next])
	s.ring[s.next] = a
	s.set[a] = struct{}{}
	s.next = (s.next + 1) % earlyAckedCap
}

func (s *earlyAckedSet) has(a attempt) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.set[a]
	return ok
}

// Package lifecycle is the start/stop guard of the background components
// (the worker, the event dispatcher, the remote-control node, beat): each
// one's blocking Run runs once, and a second Run, or a Run after Shutdown,
// gets the component's sentinel error instead of a panic or a half-started
// copy, as http.Server's ListenAndServe returns ErrServerClosed.
package lifecycle

import "sync"

// Guard is one component's state: new, running, then stopped. The zero
// value is a new component.
type Guard struct {
	mu      sync.Mutex
	state   int // 0 new, 1 running, 2 stopped
	done    chan struct{}
	stopped bool // Stop requested, maybe before Run got as far as its hook
	hook    func()
}

const (
	stateNew = iota
	stateRunning
	stateStopped
)

func (g *Guard) doneLocked() chan struct{} {
	if g.done == nil {
		g.done = make(chan struct{})
	}
	return g.done
}

// Start moves a new component to running. It reports false when the
// component has run, is running, or was shut down before it ran.
func (g *Guard) Start() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != stateNew {
		return false
	}
	g.state = stateRunning
	g.doneLocked()
	return true
}

// OnStop sets what RequestStop calls while Run is running (cancelling
// Run's context, typically). If a stop was requested before, f runs now.
func (g *Guard) OnStop(f func()) {
	g.mu.Lock()
	g.hook = f
	requested := g.stopped
	g.mu.Unlock()
	if requested {
		f()
	}
}

// RequestStop asks a running component to stop, or marks a new one as
// stopped so that it never runs. It reports whether the component was
// running (or had run), that is whether Done is worth waiting for.
func (g *Guard) RequestStop() (ran bool) {
	g.mu.Lock()
	switch g.state {
	case stateNew:
		g.state = stateStopped
		close(g.doneLocked())
		g.mu.Unlock()
		return false
	case stateStopped:
		g.mu.Unlock()
		return true
	}
	g.stopped = true
	hook := g.hook
	g.mu.Unlock()
	if hook != nil {
		hook()
	}
	return true
}

// Stop marks the end of Run; Done's channel closes.
func (g *Guard) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == stateStopped {
		return
	}
	g.state = stateStopped
	g.hook = nil
	close(g.doneLocked())
}

// Done is closed once Run has returned, or at once for a component
// stopped before it ran.
func (g *Guard) Done() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.doneLocked()
}

// Running reports whether Run has started and not yet returned.
func (g *Guard) Running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == stateRunning
}

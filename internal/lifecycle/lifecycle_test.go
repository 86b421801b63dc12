package lifecycle

import (
	"sync"
	"testing"
)

func TestGuard(t *testing.T) {
	t.Run("runs once", func(t *testing.T) {
		var g Guard
		if !g.Start() {
			t.Fatal("first Start refused")
		}
		if g.Start() {
			t.Fatal("second Start while running allowed")
		}
		g.Stop()
		if g.Start() {
			t.Fatal("Start after Stop allowed")
		}
		<-g.Done()
	})
	t.Run("stop before run", func(t *testing.T) {
		var g Guard
		if g.RequestStop() {
			t.Fatal("a new component reported as running")
		}
		<-g.Done()
		if g.Start() {
			t.Fatal("Start after a stop before Run allowed")
		}
	})
	t.Run("stop requested before the hook is set", func(t *testing.T) {
		var g Guard
		g.Start()
		if !g.RequestStop() {
			t.Fatal("running component reported as new")
		}
		called := false
		g.OnStop(func() { called = true })
		if !called {
			t.Fatal("the hook set after the request did not run")
		}
	})
	t.Run("concurrent starts", func(t *testing.T) {
		var g Guard
		var wg sync.WaitGroup
		var mu sync.Mutex
		n := 0
		for range 16 {
			wg.Go(func() {
				if g.Start() {
					mu.Lock()
					n++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if n != 1 {
			t.Fatalf("%d Starts succeeded", n)
		}
	})
}

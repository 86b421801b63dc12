package dial_test

import (
	"context"
	"flag"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/gocelery/gocelery/broker/dial"
)

func TestUnsupportedScheme(t *testing.T) {
	for _, url := range []string{"sqs://x", "memory://", "qpid://h", "nothing"} {
		if _, err := dial.Broker(context.Background(), url, dial.Config{}); err == nil || !strings.Contains(err.Error(), "unsupported URL scheme") {
			t.Errorf("%s: %v", url, err)
		}
	}
}

func TestOptionsFlag(t *testing.T) {
	m := map[string]any{}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(dial.TransportOptionsFlag(m), "o", "")
	if err := fs.Parse([]string{"-o", "master_name=mymaster", "-o", `sentinel_kwargs={"password": "x"}`, "-o", "socket_timeout=2.5"}); err != nil {
		t.Fatal(err)
	}
	kw, _ := m["sentinel_kwargs"].(map[string]any)
	if m["master_name"] != "mymaster" || kw["password"] != "x" || m["socket_timeout"] != 2.5 {
		t.Errorf("options = %#v", m)
	}
}

// The tools that only open a broker (gocelery inspect, control, beat)
// import this package, not the worker program: it must not pull in the
// metrics stack.
func TestNoMetricsStack(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/gocelery/gocelery/broker/dial").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "prometheus") || strings.HasSuffix(pkg, "gocelery/metrics") || strings.HasSuffix(pkg, "gocelery/worker") {
			t.Errorf("dial depends on %s", pkg)
		}
	}
}

package worker

import (
	"io"
	"testing"
)

func TestRPCBackendFlags(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		rpc        bool
		persistent bool
	}{
		{[]string{"-Q", "q", "--result-backend", "rpc://"}, true, false},
		{[]string{"-Q", "q", "--result-backend", "rpc://", "--result-persistent"}, true, true},
		{[]string{"-Q", "q", "--result-backend", "rpc"}, true, false},
		{[]string{"-Q", "q", "--result-backend", "redis://127.0.0.1:6379/0"}, false, false},
		{[]string{"-Q", "q"}, false, false},
	} {
		t.Setenv("CELERY_RESULT_BACKEND", "")
		o, err := ParseFlags("worker", tc.args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := isRPC(o.ResultBackendURL); got != tc.rpc || o.ResultPersistent != tc.persistent {
			t.Errorf("%v: rpc %v persistent %v, want %v %v", tc.args, got, o.ResultPersistent, tc.rpc, tc.persistent)
		}
	}
}

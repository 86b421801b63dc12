package main

import "testing"

func TestUsesPostgres(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
		want bool
	}{
		{[]string{"--store", "postgres://u@h/db"}, "", true},
		{[]string{"list", "--store=postgresql://u@h/db", "--json"}, "", true},
		{[]string{"-store", "postgres://u@h/db"}, "", true},
		{[]string{"migrate"}, "", true},
		{[]string{"list", "--redis", "redis://h/0"}, "", false},
		{[]string{"--store", "redis://h/0"}, "postgres://u@h/db", false},
		{[]string{"list"}, "postgres://u@h/db", true},
		{[]string{"add", "x", "--task", "t", "--trigger", "every 1s"}, "", false},
		{[]string{"--key-prefix", "store"}, "", false},
	} {
		t.Setenv("GOCELERY_BEAT_STORE", c.env)
		if got := usesPostgres(c.args); got != c.want {
			t.Errorf("usesPostgres(%q) with GOCELERY_BEAT_STORE=%q = %v, want %v", c.args, c.env, got, c.want)
		}
	}
}

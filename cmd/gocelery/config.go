package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gocelery/gocelery/config"
	"github.com/gocelery/gocelery/worker"
)

// celeryConfig is --config for gocelery beat, inspect and control: the
// worker's Celery-named file, of which they use the connection settings.
type celeryConfig struct {
	path string
	// Maps the transport options of the file go into (a flag's key wins).
	brokerOptions, backendOptions map[string]any
}

func (c *celeryConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.path, "config", "", worker.ConfigFlagUsage)
}

// apply loads the file and sets, through fs, each flag it has a setting
// for that neither the command line nor the environment set (so the
// program sees it as given). Warnings go to stderr.
func (c *celeryConfig) apply(fs *flag.FlagSet, stderr io.Writer) error {
	if c.path == "" {
		return nil
	}
	f, err := config.Load(c.path)
	if err != nil {
		return err
	}
	for _, w := range f.Warnings {
		fmt.Fprintf(stderr, "config: %s\n", w)
	}
	set := make(map[string]bool)
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for _, s := range []struct {
		key, env string
		value    string
		flags    []string
	}{
		{"broker_url", "CELERY_BROKER_URL", f.BrokerURL, []string{"broker", "b"}},
		{"result_backend", "CELERY_RESULT_BACKEND", f.ResultBackend, []string{"result-backend"}},
		{"broker_failover_strategy", "", f.BrokerFailoverStrategy, []string{"broker-failover-strategy"}},
		{"task_default_queue", "", f.Topology.DefaultQueue, []string{"default-queue"}},
		{"redbeat_redis_url", "REDBEAT_REDIS_URL", f.RedbeatRedisURL, []string{"redis"}},
		{"redbeat_key_prefix", "", f.RedbeatKeyPrefix, []string{"key-prefix"}},
	} {
		if !f.Has(s.key) || (s.env != "" && os.Getenv(s.env) != "") {
			continue
		}
		given := false
		for _, name := range s.flags {
			given = given || set[name]
		}
		if given {
			continue
		}
		for _, name := range s.flags {
			if fs.Lookup(name) != nil {
				if err := fs.Set(name, s.value); err != nil {
					return fmt.Errorf("%s: %s: %w", c.path, s.key, err)
				}
			}
		}
	}
	merge := func(dst, src map[string]any) {
		for k, v := range src {
			if _, ok := dst[k]; !ok && dst != nil {
				dst[k] = v
			}
		}
	}
	merge(c.brokerOptions, f.BrokerTransportOptions)
	merge(c.backendOptions, f.ResultBackendTransportOptions)
	return nil
}

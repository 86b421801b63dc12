package beat

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"
)

type crontabCases struct {
	Celery string `json:"celery"`
	Cases  []struct {
		Expr      string    `json:"expr"`
		TZ        string    `json:"tz"`
		LastRunAt time.Time `json:"last_run_at"`
		Now       time.Time `json:"now"`
		Next      time.Time `json:"next"`
	} `json:"cases"`
	Intervals []struct {
		Every     float64   `json:"every"`
		Relative  bool      `json:"relative"`
		TZ        string    `json:"tz"`
		LastRunAt time.Time `json:"last_run_at"`
		Next      time.Time `json:"next"`
	} `json:"intervals"`
	Bad []struct {
		Expr  string `json:"expr"`
		Error string `json:"error"`
	} `json:"bad"`
}

// TestCrontabCelery checks Next against next-run times computed by the
// pinned Celery (interop/python/gen_crontab_cases.py).
func TestCrontabCelery(t *testing.T) {
	data, err := os.ReadFile("testdata/crontab_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cs crontabCases
	if err := json.Unmarshal(data, &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs.Cases) < 1000 || len(cs.Bad) < 10 {
		t.Fatalf("only %d cases and %d bad strings: the file was truncated", len(cs.Cases), len(cs.Bad))
	}
	failed := 0
	for _, c := range cs.Cases {
		loc, err := time.LoadLocation(c.TZ)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := ParseCrontab(c.Expr, loc)
		if err != nil {
			t.Errorf("ParseCrontab(%q): %v", c.Expr, err)
			continue
		}
		if got := ct.Next(c.LastRunAt); !got.Equal(c.Next) {
			failed++
			if failed <= 20 {
				t.Errorf("%q in %s after %s (%s local): next %s (%s local), Celery %s says %s (%s local)",
					c.Expr, c.TZ, c.LastRunAt.Format(time.RFC3339Nano), c.LastRunAt.In(loc).Format(time.RFC3339),
					got.UTC().Format(time.RFC3339), got.In(loc).Format(time.RFC3339), cs.Celery,
					c.Next.UTC().Format(time.RFC3339), c.Next.In(loc).Format(time.RFC3339))
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d cases disagree with Celery", failed, len(cs.Cases))
	}
	for _, b := range cs.Bad {
		if _, err := ParseCrontab(b.Expr, nil); !errors.Is(err, ErrBadCrontab) {
			t.Errorf("ParseCrontab(%q) = %v, want ErrBadCrontab (Celery raises %s)", b.Expr, err, b.Error)
		}
	}
}

// TestIntervalCelery checks Interval.Next (plain and relative) against the
// pinned Celery's schedule.remaining_estimate.
func TestIntervalCelery(t *testing.T) {
	data, err := os.ReadFile("testdata/crontab_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cs crontabCases
	if err := json.Unmarshal(data, &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs.Intervals) < 500 {
		t.Fatalf("only %d interval cases", len(cs.Intervals))
	}
	failed := 0
	for _, c := range cs.Intervals {
		loc, err := time.LoadLocation(c.TZ)
		if err != nil {
			t.Fatal(err)
		}
		iv := &Interval{Every: time.Duration(c.Every * float64(time.Second)), Relative: c.Relative, Location: loc}
		if got := iv.Next(c.LastRunAt); !got.Equal(c.Next) {
			failed++
			if failed <= 20 {
				t.Errorf("%s in %s after %s (%s local): next %s (%s local), Celery says %s (%s local)",
					iv, c.TZ, c.LastRunAt.Format(time.RFC3339Nano), c.LastRunAt.In(loc).Format(time.RFC3339Nano),
					got.UTC().Format(time.RFC3339Nano), got.In(loc).Format(time.RFC3339),
					c.Next.UTC().Format(time.RFC3339Nano), c.Next.In(loc).Format(time.RFC3339))
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d interval cases disagree with Celery", failed, len(cs.Intervals))
	}
}

func TestParseFieldExpansions(t *testing.T) {
	tests := []struct {
		spec     string
		max, min int
		want     []int
	}{
		{"*/15", 60, 0, []int{0, 15, 30, 45}},
		{"*/3", 31, 1, []int{1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}},
		{"2-12/2", 12, 1, []int{2, 4, 6, 8, 10, 12}},
		{"mon-fri", 7, 0, []int{1, 2, 3, 4, 5}},
		{"fri-mon", 7, 0, []int{0, 1, 5, 6}},
		{"22-2", 24, 0, []int{0, 1, 2, 22, 23}},
		{"1-5,*/15", 60, 0, []int{0, 1, 2, 3, 4, 5, 15, 30, 45}},
		{"Monday", 7, 0, []int{1}},
		{"jan,jul", 12, 1, []int{1, 7}},
		{"sun", 7, 0, []int{0}},
		// Celery reads names in every field, month names first.
		{"mar", 7, 0, []int{3}},
		{"mon", 60, 0, []int{1}},
		{"sun-sat", 7, 0, []int{0, 1, 2, 3, 4, 5, 6}},
	}
	for _, tt := range tests {
		got, err := parseField(tt.spec, tt.max, tt.min)
		if err != nil {
			t.Errorf("parseField(%q): %v", tt.spec, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("parseField(%q) = %v, want %v", tt.spec, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("parseField(%q) = %v, want %v", tt.spec, got, tt.want)
				break
			}
		}
	}
}

// TestCrontabDayAnd checks Celery's rule: day of month AND day of week.
func TestCrontabDayAnd(t *testing.T) {
	c, err := ParseCrontab("0 12 13 * fri", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Vixie cron would fire on the next Friday (2026-01-16) or the 13th
	// (2026-01-13, a Tuesday); Celery waits for Friday the 13th.
	got := c.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 2, 13, 12, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Fatalf("next = %s, want %s", got, want)
	}
}

func TestParseCrontabErrorNamesField(t *testing.T) {
	_, err := ParseCrontab("0 25 * * *", nil)
	if !errors.Is(err, ErrBadCrontab) {
		t.Fatalf("err = %v", err)
	}
	if want := `beat: bad crontab: hour "25": invalid end range: 25 > 23`; err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
}

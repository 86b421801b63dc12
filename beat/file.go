package beat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// FileEntry is one entry of a schedule file. Trigger is a crontab string
// ("30 2 * * mon-fri"), "every <duration>" or "at <RFC 3339 time>" (see
// ParseTrigger); Timezone names the zone crontabs are read in (UTC).
type FileEntry struct {
	Name        string         `yaml:"name"`
	Description string         `yaml:"description"`
	Task        string         `yaml:"task"`
	Args        []any          `yaml:"args"`
	Kwargs      map[string]any `yaml:"kwargs"`
	Options     map[string]any `yaml:"options"`
	Trigger     string         `yaml:"trigger"`
	Relative    bool           `yaml:"relative"`
	Timezone    string         `yaml:"timezone"`
	Enabled     *bool          `yaml:"enabled"`
	StartTime   time.Time      `yaml:"start_time"`
	EndTime     time.Time      `yaml:"end_time"`
	LogPath     string         `yaml:"log_path"`
}

// Entry builds the entry; errors name the entry and wrap ErrBadCrontab or
// ErrBadEntry.
func (f *FileEntry) Entry() (*Entry, error) {
	if f.Name == "" || f.Task == "" || f.Trigger == "" {
		return nil, fmt.Errorf("%w: %q: name, task and trigger are required", ErrBadEntry, f.Name)
	}
	loc := time.UTC
	if f.Timezone != "" {
		l, err := time.LoadLocation(f.Timezone)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: timezone: %w", ErrBadEntry, f.Name, err)
		}
		loc = l
	}
	sched, err := ParseTrigger(f.Trigger, loc)
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", f.Name, err)
	}
	if iv, ok := sched.(*Interval); ok {
		iv.Relative, iv.Location = f.Relative, loc
	}
	return &Entry{Name: f.Name, Description: f.Description, Task: f.Task, Args: f.Args, Kwargs: f.Kwargs,
		Options: f.Options, Schedule: sched, Enabled: f.Enabled == nil || *f.Enabled,
		StartTime: f.StartTime, EndTime: f.EndTime, LogPath: f.LogPath}, nil
}

// ParseFile reads a schedule file: YAML (or JSON, a subset) with a list of
// entries under "entries":
//
//	entries:
//	  - name: nightly-report
//	    task: reports.nightly
//	    trigger: "30 2 * * mon-fri"
//	    timezone: Europe/Berlin
//	    options: {queue: reports, expires: 3600}
func ParseFile(data []byte) ([]*Entry, error) {
	var doc struct {
		Entries []FileEntry `yaml:"entries"`
	}
	d := yaml.NewDecoder(bytes.NewReader(data))
	d.KnownFields(true)
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: schedule file: %w", ErrBadEntry, err)
	}
	var out []*Entry
	var errs []error
	seen := map[string]bool{}
	for i := range doc.Entries {
		e, err := doc.Entries[i].Entry()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[e.Name] {
			errs = append(errs, fmt.Errorf("%w: %q declared twice", ErrBadEntry, e.Name))
		}
		seen[e.Name] = true
		out = append(out, e)
	}
	return out, errors.Join(errs...)
}

// LoadFile reads and parses a schedule file.
func LoadFile(path string) ([]*Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("beat: schedule file: %w", err)
	}
	return ParseFile(data)
}

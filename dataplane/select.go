package dataplane

import (
	"errors"
	"fmt"
	"strings"
)

// Candidate is a backend that may run on this host. Probe checks what it
// needs (kernel version, features, capabilities, driver) and returns the
// backend ready to Open, or an error saying why not — an *UnavailableError
// where the host lacks something.
type Candidate struct {
	Name  string
	Probe func(cfg Config) (Backend, error)
}

// Rejection records why a better backend than the chosen one was not used.
type Rejection struct {
	Name   string
	Reason error
}

// Selection is the outcome of Select: the backend and why each better one
// was passed over.
type Selection struct {
	Backend  Backend
	Rejected []Rejection
	// Below names the candidates ranked below the chosen one (not probed;
	// name one to use it).
	Below []string
}

// String is the one log line that says which backend runs (with what it
// settled for, if the backend has Notes — call it after Open) and why the
// better ones do not.
func (s Selection) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dataplane backend %s", s.Backend.Name())
	if n, ok := s.Backend.(interface{ Notes() []string }); ok {
		for _, note := range n.Notes() {
			fmt.Fprintf(&b, " (%s)", note)
		}
	}
	if len(s.Rejected) > 0 {
		b.WriteString("; not chosen:")
		for i, r := range s.Rejected {
			if i > 0 {
				b.WriteString(";")
			}
			fmt.Fprintf(&b, " %s (%v)", r.Name, r.Reason)
		}
	}
	if len(s.Below) > 0 {
		fmt.Fprintf(&b, "; ranked below it: %s (name one to use it)", strings.Join(s.Below, ", "))
	}
	return b.String()
}

// Select picks the backend named want among candidates, which are listed
// best first: "auto" takes the first whose probe succeeds; a name takes that
// one or fails with its probe's reason.
func Select(want string, cfg Config, candidates []Candidate) (Selection, error) {
	var sel Selection
	names := make([]string, 0, len(candidates))
	for i, c := range candidates {
		names = append(names, c.Name)
		if want != "auto" && want != c.Name {
			continue
		}
		b, err := c.Probe(cfg)
		if err == nil {
			sel.Backend = b
			if want == "auto" {
				for _, below := range candidates[i+1:] {
					sel.Below = append(sel.Below, below.Name)
				}
			}
			return sel, nil
		}
		if want != "auto" {
			return sel, fmt.Errorf("dataplane backend %s cannot run here: %w", want, err)
		}
		sel.Rejected = append(sel.Rejected, Rejection{c.Name, err})
	}
	if want != "auto" {
		return sel, fmt.Errorf("dataplane: unknown backend %q (choose auto or one of: %s)", want, strings.Join(names, ", "))
	}
	errs := make([]error, 0, len(sel.Rejected))
	for _, r := range sel.Rejected {
		errs = append(errs, r.Reason)
	}
	return sel, fmt.Errorf("dataplane: no backend can run here: %w", errors.Join(errs...))
}

// NotBuilt is the probe of a backend this build does not include yet.
func NotBuilt(backend, reason string) func(Config) (Backend, error) {
	return func(Config) (Backend, error) {
		return nil, &UnavailableError{Backend: backend, Feature: "backend", Reason: reason}
	}
}

package core

import (
	"fmt"
	"slices"

	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
)

// principal is who asks: a registered client, or an HTTP caller (all
// fields empty: only rules without client selectors match it).
type principal struct {
	clientID string
	identity string // verified certificate identity, "CN=alice"
	token    string // the name of the token the client presented
}

func (pr principal) String() string {
	if pr.clientID == "" {
		return "an HTTP caller"
	}
	s := "client " + pr.clientID
	if pr.identity != "" {
		s += " (" + pr.identity + ")"
	}
	if pr.token != "" {
		s += " (token " + pr.token + ")"
	}
	return s
}

// authorize applies the configuration's policy: may pr start a session
// with the service (method "") or call method? It returns nil or an error
// that says which rule decided, and logs denials.
func (s *Server) authorize(pr principal, hs *hostedService, method string) error {
	if s.cfg == nil || s.cfg.Policy == nil {
		return nil
	}
	pol := s.cfg.Policy
	what := "start a session with " + hs.cfg.Name
	if method != "" {
		what = "call " + hs.cfg.Name + "." + method
	}
	for _, r := range pol.Rules {
		if !ruleMatches(r, pr, hs, method) {
			continue
		}
		if r.Allow {
			return nil
		}
		err := fmt.Errorf("denied: %s may not %s (%s:%d)", pr, what, s.cfg.File, r.Line)
		s.log.Warn("policy denied", "principal", pr.String(), "action", what, "rule_line", r.Line)
		return err
	}
	if pol.Default == "allow" {
		return nil
	}
	s.log.Warn("policy denied", "principal", pr.String(), "action", what, "rule", "default deny")
	return fmt.Errorf("denied: %s may not %s (no rule of the policy at %s:%d allows it)", pr, what, s.cfg.File, pol.Line)
}

func ruleMatches(r config.Rule, pr principal, hs *hostedService, method string) bool {
	switch {
	case r.Service != "*" && r.Service != hs.cfg.Name,
		r.Client != "" && r.Client != pr.clientID,
		r.Identity != "" && r.Identity != pr.identity,
		r.Token != "" && r.Token != pr.token:
		return false
	}
	// A rule naming methods also covers starting the session that calls them.
	if method != "" && r.Methods != nil && !slices.Contains(r.Methods, method) {
		return false
	}
	return r.When == nil || conditionHolds(r.When, hs)
}

// conditionHolds evaluates when="PATH OP VALUE" against the service's
// runtime data now. A condition that cannot be evaluated (no such path, a
// value of another type) does not hold.
func conditionHolds(c *config.Condition, hs *hostedService) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.data == nil {
		return false
	}
	t, v, err := hs.data.Lookup(c.Path)
	if err != nil {
		return false
	}
	want, err := services.ParseText(t, c.Value)
	if err != nil {
		return false
	}
	var cmp int
	switch t.Kind {
	case servicefile.Int:
		cmp = compare(v.(int64), want.(int64))
	case servicefile.Float:
		cmp = compare(v.(float64), want.(float64))
	case servicefile.String:
		cmp = compare(v.(string), want.(string))
	case servicefile.Bool:
		if c.Op != "==" && c.Op != "!=" {
			return false
		}
		if v.(bool) != want.(bool) {
			cmp = 1
		}
	default:
		return false
	}
	switch c.Op {
	case "==":
		return cmp == 0
	case "!=":
		return cmp != 0
	case "<":
		return cmp < 0
	case "<=":
		return cmp <= 0
	case ">":
		return cmp > 0
	case ">=":
		return cmp >= 0
	}
	return false
}

func compare[T int64 | float64 | string](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

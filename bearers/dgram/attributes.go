package dgram

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bearerkit/connect/bearers"
)

// AttributeNames are the attributes ParseAttributes understands.
var AttributeNames = []string{"batch", "idleTimeout", "maxPeers", "offload"}

// ParseAttributes reads the datagram engine's options from a connection
// adapter's attributes (batch, maxPeers, idleTimeout, offload) and returns
// the attributes it did not consume. The udp bearer uses it in process, and
// the plugin host uses it to serve a UDP socket a plugin handed over with
// the options the adapter configured. Bad values give an error wrapping
// bearers.ErrBadAttribute that names the attribute.
func ParseAttributes(attrs bearers.Attributes) (Options, bearers.Attributes, error) {
	opts := Options{Batch: DefaultBatch}
	rest := bearers.Attributes{}
	for name, value := range attrs {
		var err error
		switch name {
		case "batch":
			opts.Batch, err = parseRange(value, 1, MaxBatch)
		case "maxPeers":
			opts.MaxPeers, err = parseRange(value, 1, 1<<20)
		case "offload":
			var on bool
			on, err = strconv.ParseBool(strings.TrimSpace(value))
			if err != nil {
				err = fmt.Errorf("want true or false")
			}
			opts.NoOffload = !on
		case "idleTimeout":
			var d time.Duration
			d, err = time.ParseDuration(strings.TrimSpace(value))
			if err == nil && d < 0 {
				err = fmt.Errorf("must not be negative")
			}
			if d == 0 {
				d = -1 // negative disables
			}
			opts.IdleTimeout = d
		default:
			rest[name] = value
			continue
		}
		if err != nil {
			return Options{}, nil, fmt.Errorf("%w: attribute %s=%q: %v", bearers.ErrBadAttribute, name, value, err)
		}
	}
	return opts, rest, nil
}

func parseRange(s string, lo, hi int) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("want an integer from %d to %d", lo, hi)
	}
	return v, nil
}

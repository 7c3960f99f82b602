package ssl

import "time"

// SetRefreshInterval lets tests make every handshake check the certificate
// files; it returns a function restoring the previous interval.
func SetRefreshInterval(d time.Duration) (restore func()) {
	old := refreshInterval
	refreshInterval = d
	return func() { refreshInterval = old }
}

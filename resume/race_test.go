//go:build race

package resume

// raceEnabled: the race detector slows every byte copied by about 5×; the
// heaviest tests move less data under it (and say so).
const raceEnabled = true

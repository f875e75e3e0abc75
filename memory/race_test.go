//go:build race

package memory

// raceEnabled is whether the race detector is on: it slows every
// goroutine, ristretto's policy goroutine among them.
const raceEnabled = true

//go:build race

package mesh

// raceEnabled: the race detector allocates and drops sync.Pool items on its own.
const raceEnabled = true

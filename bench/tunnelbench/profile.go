package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// profileEnv passes -profile's directory to the child processes.
const profileEnv = "TUNNELBENCH_PROFILE_DIR"

// startProfile starts a CPU profile written to dir/name.pprof, if dir is
// set, and returns the function that stops it (safe to call more than once).
func startProfile(dir, name string) (stop func()) {
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tunnelbench %s: CPU profile: %v\n", name, err)
		return func() {}
	}
	done := false
	return func() {
		if !done {
			done = true
			pprof.StopCPUProfile()
			f.Close()
		}
	}
}

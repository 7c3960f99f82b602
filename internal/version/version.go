// Package version reports the build's version for the commands.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/bearerkit/connect/bearers/bearerplugin"
	"github.com/bearerkit/connect/wire"
)

// Version is set at link time (-ldflags "-X .../internal/version.Version=v1.2.3");
// otherwise it comes from the module's build info.
var Version = ""

// String is one line: the program, its version and the protocol versions.
func String(program string) string {
	v := Version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("%s %s (%s, wire protocol %d, bearer contract %d)", program, v, runtime.Version(), wire.Version, bearerplugin.ContractVersion)
}

package serviceplugin

import (
	"strings"

	"github.com/bearerkit/connect/services/servicefile"
)

func fieldNames(t *servicefile.Type) string {
	if len(t.Fields) == 0 {
		return "nothing"
	}
	var names []string
	for i, f := range t.Fields {
		if i == 10 {
			names = append(names, "...")
			break
		}
		names = append(names, f.Name)
	}
	return strings.Join(names, ", ")
}

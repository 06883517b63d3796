package synthfleet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteInventory writes inventory.cue, package fleet, with n clusters
// labelled like the demo fleet's (env, class, role) across its regions:
// added to a copy of the demo fleet, it makes a large fleet of realistic
// clusters for `render --all` benchmarks.
func WriteInventory(dir string, n int) error {
	roles := []string{"active", "active", "standby"}
	var b strings.Builder
	b.WriteString("package fleet\n\nclusters: {\n")
	for i := range n {
		region, env := regions[i%len(regions)], envs[i%2]
		// As in the demo fleet, the regulated class is EU production.
		class := "standard"
		if strings.HasPrefix(region, "eu-") && env == "prod" {
			class = "regulated"
		}
		fmt.Fprintf(&b, "\t%q: {region: %q, labels: {env: %q, class: %q, role: %q}}\n",
			fmt.Sprintf("edge-%04d", i), region, env, class, roles[i%len(roles)])
	}
	b.WriteString("}\n")
	return os.WriteFile(filepath.Join(dir, "inventory.cue"), []byte(b.String()), 0o644)
}

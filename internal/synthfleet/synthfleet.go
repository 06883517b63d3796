// Package synthfleet writes synthetic fleet repositories of any size, for
// the fleet benchmarks (fleet/bench_test.go and bench/fleet.sh). The fleet
// looks like a real one: clusters across regions, environments, classes
// and teams; bundles with every kind of selector, values that read the
// cluster, and three overlays each.
package synthfleet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

var (
	regions = []string{"eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1", "ap-northeast-1"}
	envs    = []string{"prod", "staging", "dev"}
	classes = []string{"regulated", "standard"}
	teams   = []string{"storefront", "payments", "search", "data"}
)

// ClusterName is the name of the i-th synthetic cluster.
func ClusterName(i int) string { return fmt.Sprintf("c-%04d", i) }

// Write writes fleet.cue with the given numbers of clusters and bundles
// into dir.
func Write(dir string, clusters, bundles int) error {
	var b strings.Builder
	b.WriteString("package fleet\n\nclusters: {\n")
	for i := range clusters {
		fmt.Fprintf(&b, "\t%q: {region: %q, labels: {env: %q, class: %q, team: %q}}\n",
			ClusterName(i), regions[i%len(regions)], envs[i%len(envs)], classes[i%len(classes)], teams[i%len(teams)])
	}
	b.WriteString("}\n\n")
	for j := range bundles {
		fmt.Fprintf(&b, "bundles: \"app-%03d\": {\n\tnamespace: \"app-%03d\"\n", j, j)
		switch j % 5 {
		case 0:
		case 1:
			fmt.Fprintf(&b, "\ttarget: clusterSelector: matchLabels: env: %q\n", envs[j%len(envs)])
		case 2:
			b.WriteString("\ttarget: clusterSelector: matchExpressions: [{key: \"env\", operator: \"In\", values: [\"prod\", \"staging\"]}]\n")
		case 3:
			b.WriteString("\ttarget: regions: [\"eu-*\", \"us-*\"]\n")
		case 4:
			fmt.Fprintf(&b, "\ttarget: when: cluster.labels.team == %q || cluster.labels.env == \"prod\"\n", teams[j%len(teams)])
		}
		switch j % 3 {
		case 0:
			fmt.Fprintf(&b, "\thelm: chart: \"charts/app-%03d\"\n", j)
		case 1:
			fmt.Fprintf(&b, "\tkustomize: {path: \"apps/app-%03d\", labels: \"example.dev/cluster\": cluster.name}\n", j)
		case 2:
			fmt.Fprintf(&b, "\tresources: cm: {apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"app-%03d\", data: {region: cluster.region, replicas: \"\\(values.replicas)\"}}\n", j)
		}
		b.WriteString(`	values: {
		replicas: *2 | int & >=1
		region:   cluster.region
		host:     "app.\(cluster.region).example.com"
		image: {repository: "registry.example/app", tag: *"1.0.0" | string}
		resources: requests: {cpu: *"100m" | string, memory: *"128Mi" | string}
	}
	overlays: [
		{clusterSelector: matchLabels: class: "regulated", values: {podSecurity: "restricted", replicas: 3}},
		{regions: ["eu-*"], values: dataResidency: "eu"},
		{clusterSelector: matchLabels: env: "prod", values: resources: requests: cpu: "500m"},
	]
}
`)
	}
	return os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(b.String()), 0o644)
}

package report_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// FuzzParseStatus reads arbitrary status files, as a reader of every
// cluster's branch must: never a panic; an accepted file names a valid
// cluster and reads back the same once written; errors are bounded and
// free of escapes. Seeds: testdata/fuzz/FuzzParseStatus.
func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("apiVersion: flotilla.dev/v1alpha1\nkind: ClusterStatus\ncluster:\n  name: prod-eu-1\nphase: Ready\nbundles: []\n"))
	f.Add([]byte("apiVersion: flotilla.dev/v1alpha1\nkind: ClusterStatus\ncluster: {name: \"\\e[2J\"}\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := report.ParseStatus(data)
		if err != nil {
			msg := err.Error()
			if strings.ContainsRune(msg, 0x1b) || len(msg) > 16<<10 || !utf8.ValidString(msg) {
				t.Fatalf("unsafe error %q", msg)
			}
			return
		}
		if err := report.ValidateClusterName(st.Cluster.Name); err != nil {
			t.Fatalf("accepted a status of cluster %q: %v", st.Cluster.Name, err)
		}
		out, err := yaml.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		again, err := report.ParseStatus(out)
		if err != nil || again.Cluster.Name != st.Cluster.Name || again.Phase != st.Phase || len(again.Bundles) != len(st.Bundles) {
			t.Fatalf("written and read back: %v %+v", err, again)
		}
	})
}

// FuzzClusterIdentity checks identities as the flags and the identity
// ConfigMap give them: a valid identity names a status branch inside the
// prefix, and its labels survive normalisation.
func FuzzClusterIdentity(f *testing.F) {
	f.Add("prod-eu-1", "eu-west-1", "env", "prod")
	f.Add("", "", "", "")
	f.Add("../main", "x", "a/b", "c")
	f.Add("Prod", "eu", "k8s.io/x", "y")
	f.Fuzz(func(t *testing.T, name, region, key, value string) {
		c := fleet.Cluster{Name: name, Region: region, Labels: map[string]string{key: value}}
		c = c.Normalized()
		if err := c.Validate(); err != nil {
			return
		}
		if err := report.ValidateClusterName(c.Name); err != nil {
			t.Fatalf("a valid identity %q cannot name a branch: %v", c.Name, err)
		}
		branch := report.Branch(report.DefaultPrefix, c.Name)
		if branch != report.DefaultPrefix+"/"+c.Name || strings.Contains(branch, "..") {
			t.Fatalf("branch %q for %q", branch, c.Name)
		}
		if c.Labels[key] != value {
			t.Fatalf("label %q=%q lost: %v", key, value, c.Labels)
		}
	})
}

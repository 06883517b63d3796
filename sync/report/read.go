package report

import (
	"context"
	"fmt"
	"io"
	"path"
	"sort"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
	"sigs.k8s.io/yaml"
)

// Read returns every cluster's status from the tip of the status branch,
// by cluster name.
func Read(ctx context.Context, url, branch string, auth transport.AuthMethod) ([]Status, error) {
	if branch == "" {
		branch = DefaultBranch
	}
	fs := memfs.New()
	_, err := git.CloneContext(ctx, memory.NewStorage(), fs, &git.CloneOptions{
		URL: url, Auth: auth, ReferenceName: plumbing.NewBranchReferenceName(branch),
		SingleBranch: true, Depth: 1, Tags: git.NoTags,
	})
	if err != nil {
		if isMissingBranch(err) {
			return nil, fmt.Errorf("%s has no status branch %s yet: no agent has reported", url, branch)
		}
		return nil, fmt.Errorf("reading status branch %s: %w", branch, err)
	}
	entries, err := fs.ReadDir("clusters")
	if err != nil {
		return nil, nil
	}
	var out []Status
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".yaml" {
			continue
		}
		f, err := fs.Open(path.Join("clusters", e.Name()))
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(f)
		_ = f.Close()
		if err != nil {
			return nil, err
		}
		var st Status
		if err := yaml.Unmarshal(data, &st); err != nil {
			return nil, fmt.Errorf("clusters/%s: %w", e.Name(), err)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster.Name < out[j].Cluster.Name })
	return out, nil
}

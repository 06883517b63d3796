package report

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/memory"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ErrLegacyBranch is wrapped when the repository still has the one shared
// status branch of Flotilla before per-cluster branches, named like the
// prefix: Git cannot hold a branch and branches below it of the same name.
var ErrLegacyBranch = errors.New("the shared status branch of earlier Flotilla versions is in the way")

// ValidateClusterName checks that a cluster name can name a status branch
// and a file: a DNS label (lowercase letters, digits and '-', at most 63),
// so no '/', no '..', no control characters, nothing Git or a file system
// reads specially.
func ValidateClusterName(name string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("cluster name %q cannot name a status branch: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// validatePrefix checks that the prefix makes valid branch names.
func validatePrefix(prefix string) error {
	if strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("status branch prefix %q: no leading or trailing '/'", prefix)
	}
	if err := plumbing.NewBranchReferenceName(prefix + "/cluster").Validate(); err != nil {
		return fmt.Errorf("status branch prefix %q: %w", prefix, err)
	}
	return nil
}

// explainPush adds what is known of a failed push: the legacy shared
// branch in the way of a new cluster branch. (Git reports that as a
// failure to lock the ref, in words that vary by server.)
func (r *Reporter) explainPush(ctx context.Context, err error) error {
	refs, lerr := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{r.opts.URL}}).
		ListContext(ctx, &git.ListOptions{Auth: r.opts.Auth})
	if lerr != nil {
		return err
	}
	for _, ref := range refs {
		if ref.Name() == plumbing.NewBranchReferenceName(r.opts.Prefix) {
			return fmt.Errorf("%w: delete branch %s (git push origin --delete %s), or choose another prefix: %w",
				ErrLegacyBranch, r.opts.Prefix, r.opts.Prefix, err)
		}
	}
	return err
}

package companion

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
)

// WaveBranch is one rollout wave's part of a hydration, for a branch of
// its own: GitOps Promoter promotes per environment, each environment
// being an active branch and a proposed one named after it
// (<active>-next), which a hydrator writes. With a branch per wave, each
// wave is a Promoter environment: hydrate writes <branch>-<wave>-next,
// Promoter merges it into <branch>-<wave>, which the wave's clusters
// follow.
type WaveBranch struct {
	Wave string
	// Branch is the proposed branch hydrate writes (<branch>-<wave>-next);
	// Active the branch Promoter promotes it to and the clusters follow.
	Branch, Active string
	Out            *Output
}

// ErrNoWaves is returned when a branch per wave is asked of a fleet
// without rollout waves.
var ErrNoWaves = errors.New("the fleet has no rollout waves")

// WaveBranches splits a hydration by the fleet's rollout waves: one
// branch per wave that has clusters, holding only its clusters' folders,
// each with the root hydrator.metadata and the notes Promoter reads.
func (o *Output) WaveBranches(branch string) ([]WaveBranch, error) {
	waves := map[string]map[string]bool{}
	var order []string
	for _, g := range o.Rollouts {
		if g.Bundle == "" {
			for _, w := range g.Waves {
				order = append(order, w.Name)
			}
		}
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("a branch per wave: %w (rollout: waves in fleet.cue)", ErrNoWaves)
	}
	for _, c := range slices.Sorted(maps.Keys(o.waveOf)) {
		w := o.waveOf[c]
		if waves[w] == nil {
			waves[w] = map[string]bool{}
		}
		waves[w][c] = true
	}
	var out []WaveBranch
	for _, w := range order {
		wb := WaveBranch{Wave: w, Active: branch + "-" + w, Branch: branch + "-" + w + "-next", Out: o.only(waves[w])}
		if err := plumbing.NewBranchReferenceName(wb.Branch).Validate(); err != nil {
			return nil, fmt.Errorf("wave %s: branch %s: %w", w, wb.Branch, err)
		}
		out = append(out, wb)
	}
	return out, nil
}

// only is the part of the hydration that belongs to the clusters.
func (o *Output) only(clusters map[string]bool) *Output {
	mine := func(p string) bool {
		rest, ok := strings.CutPrefix(p, ClustersDir+"/")
		if !ok {
			return false
		}
		c, _, _ := strings.Cut(rest, "/")
		return clusters[c]
	}
	sub := &Output{Metadata: o.Metadata, Files: map[string][]byte{}, Known: o.Known, Rollouts: o.Rollouts, held: o.held}
	for p, data := range o.Files {
		if mine(p) {
			sub.Files[p] = data
		}
	}
	for _, d := range o.Dirs {
		if mine(d) {
			sub.Dirs = append(sub.Dirs, d)
		}
	}
	for _, k := range o.Keep {
		// A cluster whose fleet did not evaluate has no wave now: it
		// keeps its folder wherever it had one.
		rest, _ := strings.CutPrefix(k, ClustersDir+"/")
		c, _, _ := strings.Cut(rest, "/")
		if _, placed := o.waveOf[c]; mine(k) || !placed {
			sub.Keep = append(sub.Keep, k)
		}
	}
	for _, l := range o.listings {
		if clusters[l.cluster] {
			sub.listings = append(sub.listings, l)
			sub.Clusters++
		}
	}
	for _, g := range o.Gates {
		if clusters[g.Cluster] {
			sub.Gates = append(sub.Gates, g)
		}
	}
	return sub
}

package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
)

// ArgoCDResult is what Argo CD's own ApplicationSet code made of an
// ApplicationSet (see tools/argocd/main.go).
type ArgoCDResult struct {
	// Applications are the rendered Applications, as JSON objects.
	Applications []map[string]any `json:"applications"`
	// Steps is each Application's progressive sync step ("1" first; "-1":
	// no step selects it).
	Steps map[string]string `json:"steps"`
	// Pending are the Applications progressive sync lets sync once the
	// Applications of the first healthy steps are Healthy.
	Pending []string `json:"pending"`
}

var appsetRuns atomic.Int64

// ArgoCDApplicationSet renders the ApplicationSet (YAML) with Argo CD's
// ApplicationSet generators, templates and progressive sync manager
// (argocd-appset, built by make testenv) against this cluster, which holds
// Argo CD's CRDs (InstallCRDs "argocd"), its AppProjects and the plugin
// generator's ConfigMap and Secret. The Git files generator reads the
// repository over its URL with Argo CD's git client. An error carries
// what Argo CD's code said.
func (c *Cluster) ArgoCDApplicationSet(ctx context.Context, appset []byte, healthySteps int) (*ArgoCDResult, error) {
	file := filepath.Join(c.Dir, "applicationset-"+strconv.FormatInt(appsetRuns.Add(1), 10)+".yaml")
	if err := os.WriteFile(file, appset, 0o600); err != nil {
		return nil, err
	}
	out, err := argoCDAppset(ctx, "ApplicationSet", "--kubeconfig", c.Kubeconfig, "--appset", file,
		"--git-cache", filepath.Join(c.Dir, "argocd-git"), "--healthy-steps", strconv.Itoa(healthySteps))
	if err != nil {
		return nil, err
	}
	var res ArgoCDResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("argocd-appset's output: %w", err)
	}
	return &res, nil
}

// argoCDAppset runs argocd-appset (built by make testenv) and returns what
// it printed; an error carries what Argo CD's code (what) said.
func argoCDAppset(ctx context.Context, what string, args ...string) ([]byte, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(assets, "argocd-appset")
	if fi, err := os.Stat(bin); err != nil || fi.Size() == 0 {
		return nil, fmt.Errorf("%w: argocd-appset is not in %s; run make testenv", ErrBinariesMissing, assets)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("argocd-appset (Argo CD's %s code): %w: %s", what, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// ArgoCDHydratorMetadata is the root hydrator.metadata Argo CD's source
// hydrator writes for the dry commit revision of the repository at
// repoURL (read with Argo CD's git client into a clone under dir), as
// JSON.
func ArgoCDHydratorMetadata(ctx context.Context, dir, repoURL, revision string) ([]byte, error) {
	return argoCDAppset(ctx, "hydrator", "--hydrator-metadata", "--repo", repoURL, "--revision", revision, "--git-cache", dir)
}

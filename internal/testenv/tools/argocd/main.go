// Command argocd-appset renders ApplicationSets with Argo CD's own
// ApplicationSet code, so that Flotilla's companion-mode tests check what
// Argo CD makes of Flotilla's outputs rather than what Flotilla's tests
// think it makes of them:
//
//   - the generators are Argo CD's (the Git files generator and the plugin
//     generator, which reads its ConfigMap and token Secret from the real
//     API server given by --kubeconfig and calls the plugin over HTTP);
//   - the Applications are rendered by the ApplicationSet controller's
//     template code (controllers/template.GenerateApplications: Go
//     templates, goTemplateOptions such as missingkey=error,
//     templatePatch);
//   - with a RollingSync strategy, the steps are the progressive sync
//     manager's (progressivesync.Manager): each Application's step, and
//     which Applications it lets sync once the first --healthy-steps
//     steps are Healthy.
//
// The one part that is not Argo CD's process is the repo-server: the Git
// files generator asks it for files over gRPC; here the same listing is
// done by the repo-server's own git client (util/git: fetch, checkout, git
// ls-files of the pattern, as GetGitFiles does), without its cache.
//
// With --hydrator-metadata, it prints instead the root hydrator.metadata
// Argo CD's source hydrator writes for the commit --revision of --repo:
// the repo-server's RevisionMetadata (Argo CD's git client, trailers
// parsed by git interpret-trailers) turned into the commit server's file
// by util/hydrator.GetCommitMetadata.
//
// Output: one JSON object on stdout, {"applications": [...], "steps":
// {app: step}, "pending": [app...]}. A generation or rendering error is
// printed on stderr with exit status 1.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/argoproj/argo-cd/gitops-engine/pkg/health"
	"github.com/argoproj/argo-cd/v3/applicationset/controllers/template"
	"github.com/argoproj/argo-cd/v3/applicationset/generators"
	"github.com/argoproj/argo-cd/v3/applicationset/progressivesync"
	"github.com/argoproj/argo-cd/v3/applicationset/utils"
	argov1alpha1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/git"
	"github.com/argoproj/argo-cd/v3/util/hydrator"
	log "github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

type result struct {
	Applications []argov1alpha1.Application `json:"applications"`
	// Steps is each Application's progressive sync step (1-based; -1: no
	// step selects it), as the manager writes it into the status.
	Steps map[string]string `json:"steps,omitempty"`
	// Pending are the Applications the manager moves to Pending (allowed
	// to sync) once the first --healthy-steps steps are Healthy.
	Pending []string `json:"pending"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "the API server holding Argo CD's CRDs, AppProjects, ConfigMaps and Secrets")
	file := flag.String("appset", "", "the ApplicationSet, as YAML")
	namespace := flag.String("namespace", "argocd", "Argo CD's namespace")
	cache := flag.String("git-cache", "", "folder for the git client's clones")
	healthy := flag.Int("healthy-steps", 0, "take the Applications of the first N steps as synced and Healthy")
	metadata := flag.Bool("hydrator-metadata", false, "print the hydrator.metadata of --revision of --repo")
	repo := flag.String("repo", "", "with --hydrator-metadata: the dry repository's URL")
	revision := flag.String("revision", "", "with --hydrator-metadata: the dry commit")
	flag.Parse()
	log.SetOutput(os.Stderr)
	log.SetLevel(log.WarnLevel)
	var err error
	if *metadata {
		err = hydratorMetadata(*repo, *revision, *cache)
	} else {
		err = run(*kubeconfig, *file, *namespace, *cache, *healthy)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-appset:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, file, namespace, cache string, healthy int) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var appset argov1alpha1.ApplicationSet
	if err := yaml.UnmarshalStrict(data, &appset); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := argov1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	kube, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	gens := map[string]generators.Generator{
		"Git":    generators.NewGitGenerator(gitRepos{root: cache}, namespace),
		"Plugin": generators.NewPluginGenerator(kube, namespace),
		"List":   generators.NewListGenerator(),
	}
	logCtx := log.WithField("applicationset", appset.Name)
	apps, reason, err := template.GenerateApplications(logCtx, appset, gens, &utils.Render{}, kube)
	if err != nil {
		return fmt.Errorf("%s: %w", reason, err)
	}
	res := result{Applications: apps, Pending: []string{}}
	if progressivesync.IsRollingSyncStrategy(&appset) {
		if res.Steps, res.Pending, err = progress(context.Background(), kube, appset, apps, healthy); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// progress runs the progressive sync manager twice: once on new
// Applications (every one Waiting) for the steps, and once with the
// Applications of the first healthy steps synced and Healthy, the others
// out of sync, for which it lets sync next.
func progress(ctx context.Context, kube client.Client, appset argov1alpha1.ApplicationSet, apps []argov1alpha1.Application, healthy int) (map[string]string, []string, error) {
	logCtx := log.WithField("applicationset", appset.Name)
	store := &statusStore{}
	m := progressivesync.NewManager(kube, kube, store)
	if _, err := m.PerformProgressiveSyncs(ctx, logCtx, appset, apps, apps); err != nil {
		return nil, nil, err
	}
	steps := map[string]string{}
	for _, s := range store.statuses {
		steps[s.Application] = s.Step
	}
	current := make([]argov1alpha1.Application, len(apps))
	appset.Status.ApplicationStatus = nil
	for i, a := range apps {
		a = *a.DeepCopy()
		a.Status.Health.Status = health.HealthStatusHealthy
		a.Status.Sync.Status = argov1alpha1.SyncStatusCodeOutOfSync
		if step, _ := strconv.Atoi(steps[a.Name]); step >= 1 && step <= healthy {
			a.Status.Sync.Status = argov1alpha1.SyncStatusCodeSynced
			appset.Status.ApplicationStatus = append(appset.Status.ApplicationStatus, argov1alpha1.ApplicationSetApplicationStatus{
				Application: a.Name, Status: argov1alpha1.ProgressiveSyncHealthy, Step: steps[a.Name],
			})
		}
		current[i] = a
	}
	if _, err := m.PerformProgressiveSyncs(ctx, logCtx, appset, current, apps); err != nil {
		return nil, nil, err
	}
	pending := []string{}
	for _, s := range store.statuses {
		if s.Status == argov1alpha1.ProgressiveSyncPending {
			pending = append(pending, s.Application)
		}
	}
	slices.Sort(pending)
	return steps, pending, nil
}

// statusStore keeps what the manager writes into the ApplicationSet's
// status, as the controller does, in place.
type statusStore struct {
	statuses []argov1alpha1.ApplicationSetApplicationStatus
}

func (s *statusStore) SetAppSetApplicationStatus(_ context.Context, _ *log.Entry, appset *argov1alpha1.ApplicationSet, statuses []argov1alpha1.ApplicationSetApplicationStatus) error {
	appset.Status.ApplicationStatus = statuses
	s.statuses = statuses
	return nil
}

func (s *statusStore) SetApplicationSetStatusCondition(_ context.Context, appset *argov1alpha1.ApplicationSet, c argov1alpha1.ApplicationSetCondition, _ bool) error {
	appset.Status.SetConditions([]argov1alpha1.ApplicationSetCondition{c}, map[argov1alpha1.ApplicationSetConditionType]bool{c.Type: true})
	return nil
}

// hydratorMetadata prints what Argo CD's hydrator writes as the root
// hydrator.metadata for a dry commit.
func hydratorMetadata(repoURL, revision, cache string) error {
	c, err := checkout(repoURL, revision, cache)
	if err != nil {
		return err
	}
	m, err := c.RevisionMetadata(revision)
	if err != nil {
		return err
	}
	// As the repo-server's RevisionMetadata answers it.
	refs := make([]argov1alpha1.RevisionReference, len(m.References))
	for i, r := range m.References {
		if r.Commit == nil {
			continue
		}
		refs[i] = argov1alpha1.RevisionReference{Commit: &argov1alpha1.CommitMetadata{
			Author: r.Commit.Author.String(), Date: r.Commit.Date, Subject: r.Commit.Subject,
			Body: r.Commit.Body, SHA: r.Commit.SHA, RepoURL: r.Commit.RepoURL,
		}}
	}
	meta := &argov1alpha1.RevisionMetadata{Author: m.Author, Date: &metav1.Time{Time: m.Date}, Tags: m.Tags, Message: m.Message, References: refs}
	file, err := hydrator.GetCommitMetadata(repoURL, revision, meta)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(file)
}

// checkout clones the repository at the revision with Argo CD's git
// client, as the repo-server does.
func checkout(repoURL, revision, cache string) (git.Client, error) {
	sum := sha256.Sum256([]byte(repoURL))
	c, err := git.NewClientExt(repoURL, filepath.Join(cache, hex.EncodeToString(sum[:8])), git.NopCreds{}, true, false, "", "")
	if err != nil {
		return nil, err
	}
	if err := c.Init(); err != nil {
		return nil, err
	}
	sha, err := c.LsRemote(revision)
	if err != nil {
		return nil, err
	}
	if err := c.Fetch(sha, 0); err != nil {
		return nil, err
	}
	if _, err := c.Checkout(sha, false, true); err != nil {
		return nil, err
	}
	return c, nil
}

// gitRepos answers the Git generator's questions as the repo-server's
// GetGitFiles does, with the repo-server's git client.
type gitRepos struct{ root string }

func (r gitRepos) GetFiles(_ context.Context, repoURL, revision, _, pattern string, _ bool, _ *argov1alpha1.SourceIntegrity) (map[string][]byte, error) {
	c, err := checkout(repoURL, revision, r.root)
	if err != nil {
		return nil, err
	}
	files, err := c.LsFiles(pattern, false)
	if err != nil {
		return nil, err
	}
	res := map[string][]byte{}
	for _, f := range files {
		if res[f], err = os.ReadFile(filepath.Join(c.Root(), f)); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (r gitRepos) GetDirectories(context.Context, string, string, string, bool, *argov1alpha1.SourceIntegrity) ([]string, error) {
	return nil, errors.New("the git directory generator is not used by Flotilla's ApplicationSets")
}

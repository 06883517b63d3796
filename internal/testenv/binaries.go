// Package testenv starts real Kubernetes clusters on the local machine for
// Flotilla's tests and demo: a kube-apiserver and etcd driven by
// controller-runtime's envtest, and optionally a "full" cluster that adds
// kube-controller-manager, kube-scheduler and kwok-managed fake nodes so that
// workloads really roll out.
//
// The binaries are built from pinned module versions by `make testenv`
// (see tools/build.sh); nothing is downloaded from outside the Go module
// proxy.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/flotilla-gitops/flotilla/internal/checkout"
)

// AssetsEnv is the environment variable that points at the folder holding
// the control-plane binaries. It is the variable envtest itself honours, so
// setup-envtest users can point Flotilla's tests at their own binaries.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// defaultAssetsDir is where `make testenv` puts the binaries, relative to the
// repository root.
const defaultAssetsDir = "bin/testenv"

// ErrBinariesMissing is returned when a binary the requested cluster needs is
// not in the assets folder. Its message says how to build the binaries.
var ErrBinariesMissing = errors.New("test control-plane binaries are missing")

// controlPlaneBinaries are needed by every cluster; fullBinaries only by a
// full one.
var (
	controlPlaneBinaries = []string{"kube-apiserver", "etcd"}
	fullBinaries         = []string{"kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml"}
)

// AssetsDir returns the folder holding the control-plane binaries:
// $KUBEBUILDER_ASSETS when set, else bin/testenv at the root of the Flotilla
// checkout that contains the working directory.
func AssetsDir() (string, error) {
	if dir := os.Getenv(AssetsEnv); dir != "" {
		return filepath.Abs(dir)
	}
	root, err := checkout.Root()
	if err != nil {
		return "", fmt.Errorf("%w: %w; set %s", ErrBinariesMissing, err, AssetsEnv)
	}
	return filepath.Join(root, defaultAssetsDir), nil
}

// checkBinaries verifies that every binary a cluster needs is present in dir
// and wraps ErrBinariesMissing with instructions when one is not.
func checkBinaries(dir string, full bool) error {
	need := controlPlaneBinaries
	if full {
		need = append(append([]string{}, need...), fullBinaries...)
	}
	var missing []string
	for _, b := range need {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Size() == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not found in %s; run `make testenv` at the repository root "+
			"(builds them from the Go module proxy, about 6 minutes the first time) or set %s to a folder that has them",
			ErrBinariesMissing, strings.Join(missing, ", "), dir, AssetsEnv)
	}
	return nil
}

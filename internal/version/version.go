// Package version tells which Flotilla build is running: the release and
// commit stamped in by the Makefile, the Go toolchain, and the Kubernetes API
// version the binary was compiled against. The CLI prints it and agents
// publish it in their status, so a fleet shows which builds it runs.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Stamped at link time by the Makefile:
//
//	-ldflags "-X github.com/flotilla-gitops/flotilla/internal/version.version=v0.1.0
//	          -X github.com/flotilla-gitops/flotilla/internal/version.commit=1a2b3c4"
//
// A plain `go build` leaves them empty and Get falls back to what the Go
// build information knows.
var (
	version string
	commit  string
)

// kubernetesAPIModule is the module whose version names the Kubernetes API
// Flotilla's types and clients were compiled against.
const kubernetesAPIModule = "k8s.io/api"

// Info describes one build.
type Info struct {
	Version       string `json:"version"`
	Commit        string `json:"commit"`
	GoVersion     string `json:"goVersion"`
	Platform      string `json:"platform"`
	KubernetesAPI string `json:"kubernetesAPI"`
}

// Get returns the running build's information. Fields that are unknown say
// "unknown" rather than being empty, so a status file never has a blank.
func Get() Info {
	info := Info{
		Version:   version,
		Commit:    commit,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Commit == "" {
				info.Commit = s.Value
			}
		}
		for _, dep := range bi.Deps {
			if dep.Path == kubernetesAPIModule {
				info.KubernetesAPI = kubernetesRelease(dep.Version)
			}
		}
	}
	for _, f := range []*string{&info.Version, &info.Commit, &info.KubernetesAPI} {
		if *f == "" {
			*f = "unknown"
		}
	}
	return info
}

// kubernetesRelease turns a k8s.io/api module version (v0.37.0) into the
// Kubernetes release it belongs to (1.37.0): the staging modules are tagged
// v0.X.Y for Kubernetes 1.X.Y.
func kubernetesRelease(moduleVersion string) string {
	if rest, ok := strings.CutPrefix(moduleVersion, "v0."); ok {
		return "1." + rest
	}
	return moduleVersion
}

// String is the one-line form, as in a User-Agent or a log line.
func (i Info) String() string {
	return fmt.Sprintf("flotilla %s (commit %s, %s, %s, Kubernetes API %s)",
		i.Version, i.Commit, i.GoVersion, i.Platform, i.KubernetesAPI)
}

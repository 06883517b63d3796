// Package checkout finds the Flotilla source checkout a test or tool runs
// in, where the cached binaries live (bin/).
package checkout

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/mod/modfile"
)

// ModulePath is Flotilla's module path.
const ModulePath = "github.com/flotilla-gitops/flotilla"

// ErrNotFound is returned outside a Flotilla checkout.
var ErrNotFound = errors.New("not inside a Flotilla checkout")

// Root walks up from the working directory to the folder whose go.mod
// declares Flotilla's module.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modfile.ModulePath(data) == ModulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNotFound
		}
		dir = parent
	}
}

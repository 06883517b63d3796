package fleet

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"cuelang.org/go/cue/parser"
)

// StrayFiles finds the CUE files of the fleet's folder that are not loaded,
// so what they say is silently missing from every plan: a file in another
// package (`package teams`) or in none. Each is a problem at the file's
// package clause. (A `package fleet` file in a subfolder is not loaded
// either, but a subfolder may well be a fleet of its own, as examples/ are:
// that one is left to the reader.) Files are read through the repository
// root.
func (f *Fleet) StrayFiles(repoDir, fleetPath string) Diagnostics {
	pkgDir, err := packageDir(fleetPath)
	if err != nil {
		return nil
	}
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return nil
	}
	defer root.Close()
	entries, err := fs.ReadDir(root.FS(), pkgDir)
	if err != nil {
		return nil
	}
	var ds Diagnostics
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".cue") {
			continue
		}
		p := path.Join(pkgDir, e.Name())
		data, err := fs.ReadFile(root.FS(), p)
		if err != nil {
			continue
		}
		file, err := parser.ParseFile(p, data, parser.PackageClauseOnly)
		if err != nil {
			continue // the loader reports it
		}
		at := Position{File: filepath.Join(f.display, e.Name()), Line: 1, Column: 1}
		switch pkg := file.PackageName(); {
		case pkg == "":
			ds = append(ds, &Diagnostic{Message: "the file has no package clause, so it is not part of the fleet: begin it with `package fleet`", Positions: []Position{at}})
		case pkg != PackageName:
			if pos := file.Pos(); pos.IsValid() {
				at.Line, at.Column = pos.Line(), pos.Column()
			}
			ds = append(ds, &Diagnostic{Message: fmt.Sprintf("package %s: only package fleet of this folder is the fleet, so this file is not loaded (write `package fleet`)", pkg), Positions: []Position{at}})
		}
	}
	return ds
}

package fleet

import (
	"slices"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"
)

// dropInventory is a load.Config.ParseFile that parses a CUE file without
// its top-level `clusters:` declarations.
//
// Why: planning fills `cluster` at the root, which re-evaluates every field
// of the root. The inventory is only there for CI previews; re-evaluating
// it for each cluster's plan made planning the whole inventory quadratic in
// its size (1,000 clusters: a third of the time). Plans evaluate a second
// load of the fleet without it, unless something refers to `clusters`.
func dropInventory(name string, src any, cfg parser.Config) (*ast.File, error) {
	f, err := parser.ParseFile(name, src, cfg)
	if err != nil {
		return f, err
	}
	f.Decls = slices.DeleteFunc(f.Decls, func(d ast.Decl) bool {
		field, ok := d.(*ast.Field)
		return ok && labelName(field.Label) == fieldClusters
	})
	return f, nil
}

// refersTo reports whether any identifier other than a field label is
// named name (a reference, or a selector such as x.name: conservative).
func refersTo(files []*ast.File, name string) bool {
	labels := map[ast.Node]bool{}
	found := false
	for _, f := range files {
		ast.Walk(f, func(n ast.Node) bool {
			if field, ok := n.(*ast.Field); ok {
				labels[field.Label] = true
			}
			if id, ok := n.(*ast.Ident); ok && id.Name == name && !labels[id] {
				found = true
			}
			return !found
		}, nil)
	}
	return found
}

// labelName is the name of a plain identifier or string label.
func labelName(l ast.Label) string {
	name, _, err := ast.LabelName(l)
	if err != nil {
		return ""
	}
	return name
}

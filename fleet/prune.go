package fleet

import (
	"path"
	"slices"
	"strings"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
)

// Leaving out the bundles a cluster does not get.
//
// Evaluating the fleet costs about the same for every bundle, selected or
// not: a cluster that gets a third of the bundles pays for all of them.
// Once planOnePass has decided selection, it evaluates a copy of the fleet
// in which the bundles that do not select the cluster keep only their
// `target` (which it still checks against the decision). A copy is
// compiled once per set of bundles left out, and reused.
//
// What the plan reads is the same in the copy as in the whole fleet when:
//
//   - nothing in the fleet's own files refers to `bundles` (no bundle's
//     value can depend on another's, nor anything else on a bundle);
//   - the fleet's files declare nothing at the top level but plain fields
//     (a top-level comprehension or embedding could add to any bundle), and
//     every `bundles` declaration is a struct of bundles by plain name (no
//     pattern, comprehension or embedding applying to several);
//   - every declaration of a bundle left out is a struct of plain fields,
//     and its `target` refers to nothing but the cluster.
//
// Bundles that do not qualify are kept whole. TestOnePassPlansLikeTwo
// compares the plans with the general way's.

// maxPrunedRoots bounds the copies kept per Fleet: a fleet whose clusters
// get that many different sets of bundles plans the rest on the whole
// fleet.
const maxPrunedRoots = 64

// pruning is what leaving bundles out needs, read once per Fleet.
type pruning struct {
	// prunable are the bundles that may be left out (none when the fleet
	// does not qualify).
	prunable map[string]bool
	roots    map[string]cue.Value // by the names left out, joined
}

// readPruning finds the bundles that may be left out.
func (op *onePass) readPruning(f *Fleet) {
	op.pruning = &pruning{prunable: map[string]bool{}, roots: map[string]cue.Value{}}
	if f.variants == nil {
		return // a single plan: loading a variant costs more than it saves
	}
	bundlesDecls := topLevelDecls(f.planInst.Files, fieldBundles)
	sites := map[string][]*ast.Field{}
	for _, file := range f.planInst.Files {
		if file.Filename == schemaDisplay {
			continue
		}
		for _, decl := range file.Decls {
			switch decl := decl.(type) {
			case *ast.Package, *ast.ImportDecl, *ast.CommentGroup, *ast.Attribute:
				continue
			case *ast.Field:
				if id, ok := decl.Label.(*ast.Ident); !ok || id.Name != fieldBundles {
					if name, _, _ := ast.LabelName(decl.Label); name == fieldBundles {
						return // an aliased or quoted `bundles`
					}
					continue
				}
				body, ok := decl.Value.(*ast.StructLit)
				if !ok || decl.Constraint != token.ILLEGAL {
					return
				}
				for _, elt := range body.Elts {
					name, ok := plainField(elt)
					if !ok {
						return
					}
					sites[name] = append(sites[name], elt.(*ast.Field))
				}
			default:
				return
			}
		}
		referencesBundles := !references(file, func(x *ast.Ident) bool {
			return x.Name != fieldBundles || (x.Node != nil && !bundlesDecls[placeOf(x.Node)])
		})
		if referencesBundles {
			return
		}
	}
	for name, fields := range sites {
		ok := true
		for _, field := range fields {
			ok = ok && op.prunableBody(field)
		}
		if ok {
			op.pruning.prunable[name] = true
			if pb := op.bundles[name]; pb != nil {
				pb.static = staticSelection(fields)
			}
		}
	}
	op.readMemo(f.planInst.Files, sites)
}

// plainField returns the name of a field with a plain label (an identifier
// or a string), neither optional nor required.
func plainField(d ast.Decl) (string, bool) {
	field, ok := d.(*ast.Field)
	if !ok || field.Constraint != token.ILLEGAL {
		return "", false
	}
	switch field.Label.(type) {
	case *ast.Ident, *ast.BasicLit:
	default:
		return "", false
	}
	name, _, err := ast.LabelName(field.Label)
	return name, err == nil
}

// prunableBody reports whether a bundle declaration is a struct of plain
// fields whose `target` refers to nothing but the cluster.
func (op *onePass) prunableBody(field *ast.Field) bool {
	body, ok := field.Value.(*ast.StructLit)
	if !ok {
		return false
	}
	for _, elt := range body.Elts {
		name, ok := plainField(elt)
		if !ok {
			return false
		}
		if name == "target" && !pureSource(elt, op.clusterLabels, true) {
			return false
		}
	}
	return true
}

// staticSelection reports whether a bundle's target and overlays, in its
// declarations (sites of a bundle that may be left out), refer to nothing
// outside themselves but predeclared identifiers and imported packages:
// not the cluster, nor anything that could read it. Every declaration of
// such a bundle is one of its sites (nothing else in the fleet can add to
// it, see above), the schema is the same for every cluster, and a plan's
// patch only adds to spec fields: so its target and overlays evaluate the
// same with any cluster as without one, and planOnePass's decision, made
// without one, holds without reading them back from the evaluated fleet
// (which cost a fifth of planning an inventory).
func staticSelection(fields []*ast.Field) bool {
	for _, field := range fields {
		body, ok := field.Value.(*ast.StructLit)
		if !ok {
			return false
		}
		for _, elt := range body.Elts {
			name, _ := plainField(elt)
			if (name == "target" || name == "overlays") && !pureSource(elt, nil, true) {
				return false
			}
		}
	}
	return true
}

// root returns the fleet with the given bundles (sorted) reduced to their
// targets, compiled once per Fleet; or the whole fleet.
func (p *pruning) root(f *Fleet, out []string) cue.Value {
	if len(out) == 0 || f.variants == nil {
		return f.planRoot
	}
	key := strings.Join(out, "\x00")
	if root, ok := p.roots[key]; ok {
		return root
	}
	if len(p.roots) >= maxPrunedRoots {
		return f.planRoot
	}
	root := f.planRoot
	if inst, err := f.variants.instance(key, out); err == nil {
		if r := f.ctx.BuildInstance(inst); r.Err() == nil {
			root = r
		}
	}
	p.roots[key] = root
	return root
}

// affordable reports whether planning with the given bundles (sorted) left
// out costs no new copy of the fleet beyond half the bound: a set already
// compiled, or room for it. Leaving out the bundles reused from earlier
// plans (memo.go) makes more sets than selection alone; half the copies
// stay for those.
func (p *pruning) affordable(out []string) bool {
	if _, ok := p.roots[strings.Join(out, "\x00")]; ok {
		return true
	}
	return len(p.roots) < maxPrunedRoots/2
}

// variantCache loads the fleet's files again with bundles left out, once
// per set for all the workers of a batch (each compiles it in its own
// context). The files are parsed afresh, not copied: the compiler finds a
// name's scope by the identity of the syntax nodes the parser resolved it
// to.
type variantCache struct {
	load          func(parse func(string, any, parser.Config) (*ast.File, error)) (*build.Instance, error)
	dropInventory bool
	mu            sync.Mutex
	insts         map[string]*build.Instance
	errs          map[string]error
}

func (v *variantCache) instance(key string, out []string) (*build.Instance, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if inst, ok := v.insts[key]; ok {
		return inst, v.errs[key]
	}
	inst, err := v.load(func(name string, src any, cfg parser.Config) (*ast.File, error) {
		var file *ast.File
		var err error
		if v.dropInventory {
			file, err = dropInventory(name, src, cfg)
		} else {
			file, err = parser.ParseFile(name, src, cfg)
		}
		if err == nil && path.Base(name) != schemaFile {
			pruneFile(file, out)
		}
		return file, err
	})
	v.insts[key], v.errs[key] = inst, err
	return inst, err
}

// pruneFile reduces the declarations of the given bundles (sorted) in a
// freshly parsed file to their targets.
func pruneFile(file *ast.File, out []string) {
	for _, decl := range file.Decls {
		field, ok := decl.(*ast.Field)
		if !ok {
			continue
		}
		body, ok := field.Value.(*ast.StructLit)
		if id, isIdent := field.Label.(*ast.Ident); !ok || !isIdent || id.Name != fieldBundles {
			continue
		}
		for _, elt := range body.Elts {
			name, _ := plainField(elt)
			if _, found := slices.BinarySearch(out, name); !found {
				continue
			}
			site, ok := elt.(*ast.Field).Value.(*ast.StructLit)
			if !ok {
				continue
			}
			site.Elts = slices.DeleteFunc(site.Elts, func(e ast.Decl) bool {
				n, _ := plainField(e)
				return n != "target"
			})
		}
	}
}

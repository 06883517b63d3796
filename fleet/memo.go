package fleet

import (
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"
)

// Reusing a bundle's evaluation across clusters.
//
// In a batch of plans most bundles come out the same for many clusters: a
// Helm bundle whose values read `cluster.region` is the same for every
// cluster of a region that matches the same overlays. When the fleet can be
// pruned (prune.go: no bundle reads another, plain declarations), a
// bundle's evaluated value depends on nothing but its own declarations, the
// schema, the overlays filled into it and the parts of `cluster` its
// declarations read. So a bundle qualifies for reuse when every
// declaration of it refers to nothing but `cluster`, its own names,
// predeclared identifiers, imported packages and top-level fields that
// qualify in turn (helpers such as `_sizes`; not the bundles, nor the
// inventory), and every reference to `cluster`, there or in those helpers,
// is a path of field names (`cluster.labels.team`,
// `cluster.labels["team"]`), none of them the cluster's name (which no
// other cluster shares), a hidden field or the whole cluster.
//
// A plan then keys each such bundle it selects by its name, the overlays it
// matched and the JSON of every cluster path it reads, as evaluated with
// the fleet's constraints on `cluster`. A bundle whose key an earlier plan
// of the same worker evaluated is left out of this plan's evaluation, like
// a bundle the cluster does not get (its target is still evaluated and
// checked), and its inputs are taken from that plan; the reasons (targets
// and overlays matched), which are per cluster, are this plan's own.
// Left out of reuse: a bundle with a rollout of its own (its wave is worked
// out per cluster from CUE) and anything that failed, including values a
// chart's schema refuses (vet positions such a violation in the cluster's
// own evaluation; values that pass pass for every cluster).
//
// Only plain data is kept (no CUE value, which would keep that plan's whole
// evaluation alive). TestOnePassPlansLikeTwo and TestPlansReuseBundles
// compare such plans with the general way's.

// memo is what reuse needs, per Fleet (one per batch worker).
type memo struct {
	// reads are the paths of `cluster` each bundle that qualifies reads
	// (possibly none).
	reads   map[string][]cue.Path
	entries map[string]*memoEntry
	// pending are the entries of the plan being made, kept once Plan has
	// checked its values against the charts' schemas (a bundle that fails
	// there is not kept, and one kept passes for any cluster: the check
	// depends on the values alone).
	pending []pendingEntry
	// hits counts, per bundle, the plans that took it from an earlier one.
	hits map[string]int
}

type pendingEntry struct {
	key    string
	e      *memoEntry
	bundle *Bundle
}

// keep keeps the pending entries of a plan whose bundles are final.
func (m *memo) keep() {
	if m == nil {
		return
	}
	for _, p := range m.pending {
		if !p.bundle.Failed() {
			m.entries[p.key] = p.e
		}
	}
	m.pending = nil
}

// drop forgets the pending entries (of a plan that was not used).
func (m *memo) drop() {
	if m != nil {
		m.pending = nil
	}
}

// memoEntry is a bundle as an earlier plan evaluated it.
type memoEntry struct {
	inputs       Inputs
	digest       string
	tenant       *Grant
	dependsOnPos token.Pos
}

// readMemo finds the bundles whose evaluation may be reused: those that
// may be left out (sites are their declarations of the fleet's files) and
// read nothing but plain paths of the cluster other than its name, their
// own names, imports, and top-level fields that read nothing else either.
func (op *onePass) readMemo(files []*ast.File, sites map[string][]*ast.Field) {
	op.memo = &memo{reads: map[string][]cue.Path{}, entries: map[string]*memoEntry{}, hits: map[string]int{}}
	r := &readsOf{op: op, decls: map[string][]*ast.Field{}, labels: map[place]string{}, done: map[string]readsResult{}}
	for _, file := range files {
		for _, decl := range file.Decls {
			field, ok := decl.(*ast.Field)
			if !ok {
				continue
			}
			if name, _, err := ast.LabelName(field.Label); err == nil {
				r.decls[name] = append(r.decls[name], field)
				r.labels[placeOf(field.Value)] = name
			}
		}
	}
	for name, fields := range sites {
		if !op.pruning.prunable[name] {
			continue
		}
		if paths, ok := r.fields(fields); ok {
			op.memo.reads[name] = paths
		}
	}
}

// readsOf works out the paths of `cluster` that declarations read.
type readsOf struct {
	op *onePass
	// decls are the top-level declarations by label, labels the label of
	// each (by where its value is written: what a reference resolves to).
	decls  map[string][]*ast.Field
	labels map[place]string
	// done are the top-level fields worked out (or being worked out: a
	// field that refers to itself, through others, does not qualify).
	done map[string]readsResult
}

type readsResult struct {
	paths []cue.Path
	ok    bool
}

// fields returns the paths of `cluster` the declarations read, or false
// when one refers to anything but `cluster` by a path of field names
// other than its name, its own names, predeclared identifiers, imported
// packages, and top-level fields (other than the cluster, the bundles and
// the inventory) that qualify in turn.
func (r *readsOf) fields(fields []*ast.Field) ([]cue.Path, bool) {
	var paths []cue.Path
	seen := map[string]bool{}
	add := func(p cue.Path) {
		if !seen[p.String()] {
			seen[p.String()] = true
			paths = append(paths, p)
		}
	}
	for _, field := range fields {
		// The longest chain of selections ending at each identifier:
		// the walk meets the outermost selection first.
		chains := map[*ast.Ident][]string{}
		inside := map[ast.Node]bool{}
		ast.Walk(field, func(x ast.Node) bool {
			inside[x] = true
			switch x.(type) {
			case *ast.SelectorExpr, *ast.IndexExpr:
				if root, chain, ok := selectionChain(x.(ast.Expr)); root != nil {
					if _, done := chains[root]; !done {
						if !ok {
							chain = nil // read as a whole
						}
						chains[root] = chain
					}
				}
			}
			return true
		}, nil)
		ok := references(field, func(x *ast.Ident) bool {
			switch {
			case x.Node == nil:
				return predeclared[x.Name]
			case inside[x.Node]:
				return true
			case r.op.clusterLabels[placeOf(x.Node)]:
				chain := chains[x]
				if len(chain) == 0 || chain[0] == "name" {
					return false
				}
				sels := make([]cue.Selector, len(chain))
				for i, label := range chain {
					sels[i] = cue.Str(label)
				}
				add(cue.MakePath(sels...))
				return true
			}
			if _, isImport := x.Node.(*ast.ImportSpec); isImport {
				return true
			}
			label, ok := r.labels[placeOf(x.Node)]
			if !ok || label == fieldBundles || label == fieldClusters || label == fieldCluster {
				return false
			}
			res, known := r.done[label]
			if !known {
				r.done[label] = readsResult{} // a cycle does not qualify
				res.paths, res.ok = r.fields(r.decls[label])
				r.done[label] = res
			}
			for _, p := range res.paths {
				add(p)
			}
			return res.ok
		})
		if !ok {
			return nil, false
		}
	}
	return paths, true
}

// selectionChain flattens x.a.b["c"] into the identifier x and [a b c], as
// far as the labels are field names: x.a[i].b gives [a] (all of x.a is
// read). ok is false when a label is a definition or a hidden field, which
// the JSON of the value does not show.
func selectionChain(e ast.Expr) (root *ast.Ident, chain []string, ok bool) {
	var rev []string
	ok = true
	for {
		switch x := e.(type) {
		case *ast.Ident:
			chain := make([]string, 0, len(rev))
			for i := len(rev) - 1; i >= 0; i-- {
				chain = append(chain, rev[i])
			}
			return x, chain, ok
		case *ast.SelectorExpr:
			name, isIdent, err := ast.LabelName(x.Sel)
			if err != nil || (isIdent && (strings.HasPrefix(name, "#") || strings.HasPrefix(name, "_"))) {
				ok = false
			}
			rev = append(rev, name)
			e = x.X
		case *ast.IndexExpr:
			lit, ok := x.Index.(*ast.BasicLit)
			name := ""
			if ok && lit.Kind == token.STRING {
				s, err := strconv.Unquote(lit.Value)
				ok, name = err == nil, s
			}
			if ok {
				rev = append(rev, name)
			} else {
				rev = rev[:0]
			}
			e = x.X
		case *ast.ParenExpr:
			e = x.X
		default:
			return nil, nil, false
		}
	}
}

// key returns the key of a bundle's evaluation for a cluster (clusterV,
// evaluated with the fleet's constraints), or "" when it does not qualify.
// paths caches the JSON of each cluster path for the plan.
func (m *memo) key(name string, matched []passOverlay, clusterV cue.Value, paths map[string]string) string {
	if m == nil {
		return ""
	}
	reads, ok := m.reads[name]
	if !ok {
		return ""
	}
	var b strings.Builder
	b.WriteString(name)
	for _, o := range matched {
		b.WriteString("\x00")
		b.WriteString(o.path)
	}
	b.WriteString("\x01")
	for _, p := range reads {
		s := p.String()
		js, ok := paths[s]
		if !ok {
			js = "-" // absent
			if v := clusterV.LookupPath(p); v.Exists() {
				data, err := v.MarshalJSON()
				if err != nil {
					return ""
				}
				js = string(data)
			}
			paths[s] = js
		}
		b.WriteString(s)
		b.WriteString("=")
		b.WriteString(js)
		b.WriteString("\x00")
	}
	return b.String()
}

// entry returns what a finished bundle leaves for later plans, or nil when
// it must not be reused.
func (f *Fleet) memoEntry(b *Bundle, v cue.Value) *memoEntry {
	if b.Failed() || b.Rollout != nil || lookup(v, fieldRollout).Exists() {
		return nil
	}
	return &memoEntry{inputs: b.Inputs, digest: b.InputsDigest, tenant: b.Tenant, dependsOnPos: b.dependsOnPos}
}

// reuse completes a decided bundle from an earlier plan's evaluation.
func (e *memoEntry) reuse(b *Bundle) {
	name := b.Name
	b.Inputs = e.inputs
	b.Name = name
	b.InputsDigest = e.digest
	b.Tenant = e.tenant
	b.dependsOnPos = e.dependsOnPos
}

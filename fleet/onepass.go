package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
	"github.com/flotilla-gitops/flotilla/internal/english"
)

// Planning in one evaluation.
//
// The general way to plan (planTwice) evaluates the whole fleet twice per
// cluster: once with `cluster` filled in, to read the targets and overlay
// selectors, and once more with the matched overlays filled into their
// bundles. Each evaluation costs about the same, so planning an inventory
// spent half its time on the first one.
//
// planOnePass decides selection before evaluating anything, from the
// selectors as the fleet states them without a cluster, and then evaluates
// the fleet once, with the cluster and with each matched overlay's fields
// unified into its bundle by reference (`bundles["web"].values:
// bundles["web"].overlays[1].values`). Its plan is the general way's, or it
// is not used; what makes that so:
//
//   - Selectors must be concrete in the fleet without a cluster, except a
//     `when` that reads nothing but `cluster` (its guess is computed from
//     the cluster alone). After the evaluation every target and overlay
//     selector, overlay name and set of overlay fields is read again from
//     the evaluated fleet and must equal what the decision used; so must
//     the cluster and the fleet's rollout. CUE only ever adds information,
//     so a selector that is concrete without the cluster and the same in
//     the final value is the same in the general way's first evaluation
//     (which sits between the two); a default that the cluster would knock
//     out shows up as a difference.
//   - The fields of every matched overlay may refer to nothing but
//     `cluster`, their own fields, predeclared identifiers and imported
//     packages: then they evaluate the same whether or not the overlays are
//     already in (the general way reads them before filling them in; an
//     overlay such as `values: replicas: values.replicas + 1` would not).
//   - A fleet that redeclares a definition of Flotilla's schema (which the
//     overlay checks trust) plans the general way.
//   - Any error, in a selector, the cluster or a selected bundle, plans the
//     general way, which reports it with its positions.
//
// TestOnePassPlansLikeTwo plans every test fleet and every cluster both ways
// and compares the plans.

// onePass is what a fleet's plans in one evaluation start from, read once
// from the fleet without a cluster.
type onePass struct {
	// why is empty when plans may take one evaluation, and says why not
	// otherwise.
	why     string
	cluster cue.Value // the fleet's constraints on `cluster`
	bundles map[string]*passBundle
	// rollout is the fleet's rollout as JSON, or nil without one.
	rollout []byte
	// whens are the `when`s that read the cluster, each as a field w<n>
	// of one struct beside `cluster: _`, compiled once: a plan fills in the
	// cluster and reads them (compiling per plan would grow the CUE
	// context with every plan).
	whens     cue.Value
	whenExprs []any
	// clusterLabels are the values of the declarations of `cluster`;
	// pure remembers which overlay sources refer to nothing else.
	clusterLabels map[place]bool
	pure          map[ast.Node]bool
	// evaluatedInVain are the clusters whose one evaluation did not check
	// out: planning them again (an agent plans its cluster every pass)
	// goes the general way at once instead of evaluating three times.
	evaluatedInVain map[string]bool
	// pruning leaves out the bundles a cluster does not get (prune.go).
	pruning *pruning
	// memo reuses bundles evaluated for earlier clusters (memo.go); nil
	// when the fleet cannot be pruned.
	memo *memo
}

// passBundle is a bundle's selectors, as stated without a cluster.
type passBundle struct {
	target   *passSelector // nil without a target
	overlays []passOverlay
	// static is set when the bundle's target and overlays are the same
	// for every cluster (prune.go: staticSelection); the evaluated fleet
	// need not be checked against the decision then.
	static bool
}

// passOverlay is one overlay's selector and what it sets.
type passOverlay struct {
	overlay
	sel      passSelector
	fields   []string // the spec fields it sets
	position *Position
}

// passSelector is a selector whose `when`, if it reads the cluster, is
// evaluated per cluster from its source.
type passSelector struct {
	sel selector
	// when is set for a `when` that reads `cluster`: its field in
	// onePass.whens, and where it is written.
	when     string
	whenNode ast.Expr
}

// onePassInfo reads, once per Fleet, whether and how its plans can take one
// evaluation.
func (f *Fleet) onePassInfo() *onePass {
	f.onePassOnce.Do(func() {
		op := &onePass{bundles: map[string]*passBundle{}, pure: map[ast.Node]bool{}, evaluatedInVain: map[string]bool{}}
		f.onePass = op
		if err := op.read(f); err != nil {
			op.why = err.Error()
		}
	})
	return f.onePass
}

func (op *onePass) read(f *Fleet) error {
	if f.noOnePass {
		return fmt.Errorf("disabled")
	}
	if name := redeclaredDefinition(f.planInst.Files); name != "" {
		return fmt.Errorf("the fleet adds to the schema's %s", name)
	}
	clusterLabels := topLevelDecls(f.planInst.Files, fieldCluster)
	op.clusterLabels = clusterLabels
	if len(clusterLabels) == 0 {
		return fmt.Errorf("no cluster declaration found")
	}
	op.cluster = lookup(f.planRoot, fieldCluster)
	if rv := lookup(f.planRoot, fieldRollout); rv.Exists() {
		js, err := rv.MarshalJSON()
		if err != nil {
			return fmt.Errorf("rollout depends on the cluster")
		}
		op.rollout = js
	}
	bundles := lookup(f.planRoot, fieldBundles)
	for _, name := range f.bundles {
		if len(f.bundleErrs[name]) > 0 {
			continue // fails the same way for every cluster, unevaluated
		}
		v := lookup(bundles, name)
		pb := &passBundle{}
		if tv := lookup(v, "target"); tv.Exists() {
			s, err := op.readPassSelector(tv)
			if err != nil {
				return fmt.Errorf("bundle %s: target: %w", name, err)
			}
			pb.target = &s
		}
		overlays, err := overlayList(lookup(v, "overlays"))
		if err != nil {
			return fmt.Errorf("bundle %s: overlays: %w", name, err)
		}
		for _, o := range overlays {
			s, err := op.readPassSelector(o.value)
			if err != nil {
				return fmt.Errorf("bundle %s: %s: %w", name, o.path, err)
			}
			if !f.pureOverlay(o.value) {
				return fmt.Errorf("bundle %s: %s refers to more than the cluster", name, o.path)
			}
			po := passOverlay{overlay: o, sel: s, fields: overlayFields(o.value)}
			if ps := positionsOf([]token.Pos{userPos(o.value)}); len(ps) > 0 {
				po.position = &ps[0]
			}
			pb.overlays = append(pb.overlays, po)
		}
		op.bundles[name] = pb
	}
	op.readPruning(f)
	if len(op.whenExprs) > 0 {
		decls := append([]any{ast.NewIdent(fieldCluster), ast.NewIdent("_")}, op.whenExprs...)
		op.whens = f.ctx.BuildExpr(ast.NewStruct(decls...))
		if err := op.whens.Err(); err != nil {
			return fmt.Errorf("compiling the selectors' when: %w", err)
		}
	}
	return nil
}

// readPassSelector reads a selector without a cluster: every field but a
// `when` that reads the cluster must be concrete.
func (op *onePass) readPassSelector(v cue.Value) (passSelector, error) {
	var s passSelector
	when := lookup(v, "when")
	if when.Exists() && !when.IsConcrete() {
		node, src, err := whenSource(when, op.clusterLabels)
		if err != nil {
			return s, err
		}
		// Parsed again: the copy's names are resolved where it is
		// compiled, `cluster` to the field beside it.
		expr, err := parser.ParseExpr("when", src)
		if err != nil {
			return s, err
		}
		s.when, s.whenNode = fmt.Sprintf("w%d", len(op.whenExprs)/2), node
		op.whenExprs = append(op.whenExprs, ast.NewIdent(s.when), expr)
	}
	sel, err := decodeSelectorExcept(v, s.when != "")
	if err != nil {
		return s, fmt.Errorf("not concrete without a cluster")
	}
	s.sel = sel
	return s, nil
}

// decodeSelectorExcept is decodeSelector, leaving `when` out when asked.
func decodeSelectorExcept(v cue.Value, noWhen bool) (selector, error) {
	if !noWhen {
		return decodeSelector(v, "")
	}
	var s selector
	for field, into := range map[string]any{"clusterSelector": &s.ClusterSelector, "regions": &s.Regions, "names": &s.Names} {
		if fv := lookup(v, field); fv.Exists() {
			if err := fv.Decode(into); err != nil {
				return s, err
			}
		}
	}
	return s, nil
}

// whenSource returns the source of a `when` written once, as one
// expression that refers to nothing but `cluster`, its own names and
// predeclared identifiers.
func whenSource(when cue.Value, clusterLabels map[place]bool) (ast.Expr, []byte, error) {
	expr, err := whenExpr(when)
	if err != nil {
		return nil, nil, err
	}
	if !pureSource(expr, clusterLabels, false) {
		return nil, nil, fmt.Errorf("when refers to more than the cluster")
	}
	src, err := format.Node(expr)
	return expr, src, err
}

// whenExpr returns the one expression a `when` is written as, besides the
// schema's `bool`.
func whenExpr(when cue.Value) (ast.Expr, error) {
	var exprs []ast.Expr
	for _, c := range conjuncts(when) {
		if c.Pos().Filename() == schemaDisplay {
			continue
		}
		field, ok := c.Source().(*ast.Field)
		if !ok {
			return nil, fmt.Errorf("when is not a plain field")
		}
		exprs = append(exprs, field.Value)
	}
	if len(exprs) != 1 {
		return nil, fmt.Errorf("when is written %s", english.Count(len(exprs), "time"))
	}
	return exprs[0], nil
}

// resolve completes the selector for one cluster: a `when` that reads the
// cluster is read from whens, evaluated with only the cluster beside it.
func (s passSelector) resolve(whens cue.Value) (selector, bool) {
	if s.when == "" {
		return s.sel, true
	}
	var w bool
	if err := lookup(whens, s.when).Decode(&w); err != nil {
		return selector{}, false
	}
	sel := s.sel
	sel.When = &w
	return sel, true
}

// planOnePass plans c with one evaluation of the fleet, or returns nil when
// it cannot be sure to plan as planTwice (which the caller then does).
func (f *Fleet) planOnePass(c Cluster) *Plan {
	op := f.onePassInfo()
	if op.why != "" {
		return nil
	}
	r := &onePassRun{f: f, op: op, c: c}
	plan := r.plan()
	if r.evaluated && plan == nil {
		op.evaluatedInVain[c.Name] = true
	}
	return plan
}

// onePassRun is one cluster's plan in one evaluation.
type onePassRun struct {
	f  *Fleet
	op *onePass
	c  Cluster

	clusterV    cue.Value // the cluster, unified with #Cluster
	clusterJSON []byte
	clusterExpr ast.Expr
	whens       cue.Value // the `when`s evaluated for the cluster

	result    *Plan
	decided   []*passDecision
	out       []string // bundles the evaluation leaves out
	evaluated bool     // the fleet was evaluated (a nil plan after it was in vain)
}

// passDecision is what the run decided of one bundle before evaluating.
type passDecision struct {
	b        *Bundle
	selected bool
	target   *selector
	overlays []selector
	matched  []passOverlay
	// key is the bundle's key for reuse (memo.go), or ""; reuse is an
	// earlier plan's evaluation of it.
	key   string
	reuse *memoEntry
}

// plan runs the steps; nil when one of them cannot be sure.
func (r *onePassRun) plan() *Plan {
	// 1. The cluster, as the fleet will see it.
	if !r.encodeCluster() {
		return nil
	}
	// 2. Decide selection and overlays on the cluster alone.
	if !r.decide() {
		return nil
	}
	// 3. Leave out of the evaluation what it need not compute: bundles
	// not selected, and bundles evaluated alike for an earlier cluster.
	r.leaveOut()
	// 4. Evaluate once: the cluster, and every matched overlay's fields
	// unified into its bundle by reference.
	root, ok := r.evaluate()
	if !ok {
		return nil
	}
	// 5. Check that the evaluated fleet says what the decision assumed,
	// and read each bundle's inputs.
	if !r.checkFleet(root) || !r.readBundles(lookup(root, fieldBundles)) {
		return nil
	}
	return r.result
}

// encodeCluster encodes the cluster and evaluates the `when`s for it.
func (r *onePassRun) encodeCluster() bool {
	encoded := r.f.ctx.Encode(r.c)
	r.clusterV = r.op.cluster.Unify(encoded)
	var err error
	if r.clusterJSON, err = r.clusterV.MarshalJSON(); err != nil {
		return false
	}
	var ok bool
	if r.clusterExpr, ok = encoded.Syntax().(ast.Expr); !ok {
		return false
	}
	if r.op.whens.Exists() {
		r.whens = r.op.whens.FillPath(cue.MakePath(cue.Str(fieldCluster)), r.clusterV)
	}
	return true
}

// decide decides, for every bundle, whether its target selects the
// cluster and which overlays match.
func (r *onePassRun) decide() bool {
	r.result = &Plan{Cluster: r.c, NotSelected: []NotSelected{}}
	for _, name := range r.f.bundles {
		if errs := r.f.bundleErrs[name]; len(errs) > 0 {
			b := &Bundle{Inputs: Inputs{Name: name}, invalid: true, Errors: cloneDiagnostics(errs)}
			b.SelectedBecause = []string{invalidEverywhere}
			r.decided = append(r.decided, &passDecision{b: b, selected: true})
			continue
		}
		pb := r.op.bundles[name]
		d := &passDecision{b: &Bundle{Inputs: Inputs{Name: name}}}
		r.decided = append(r.decided, d)
		d.b.SelectedBecause = []string{"no target: every cluster"}
		if pb.target != nil {
			sel, ok := pb.target.resolve(r.whens)
			if !ok {
				return false
			}
			d.target = &sel
			selected, because, err := sel.match(r.c)
			if err != nil {
				return false
			}
			if !selected {
				r.result.NotSelected = append(r.result.NotSelected, NotSelected{Name: name, Because: because})
				continue
			}
			d.b.SelectedBecause = because
		}
		d.selected = true
		for i, o := range pb.overlays {
			sel, ok := o.sel.resolve(r.whens)
			if !ok {
				return false
			}
			d.overlays = append(d.overlays, sel)
			matched, because, err := sel.match(r.c)
			if err != nil {
				return false
			}
			if matched {
				d.b.Overlays = append(d.b.Overlays, MatchedOverlay{Index: i, Name: o.name, Because: because, Position: o.position})
				d.matched = append(d.matched, o)
			}
		}
	}
	return true
}

// leaveOut chooses the bundles the evaluation leaves out: those not
// selected that can be, and those an earlier cluster's evaluation serves
// (memo.go), when the variant of the fleet without them is affordable.
func (r *onePassRun) leaveOut() {
	for _, d := range r.decided {
		if !d.selected && r.op.pruning.prunable[d.b.Name] {
			r.out = append(r.out, d.b.Name)
		}
	}
	slices.Sort(r.out)
	paths := map[string]string{}
	withReused := slices.Clone(r.out)
	for _, d := range r.decided {
		if d.selected && !d.b.invalid {
			if d.key = r.op.memo.key(d.b.Name, d.matched, r.clusterV, paths); d.key != "" {
				if d.reuse = r.op.memo.entries[d.key]; d.reuse != nil {
					withReused = append(withReused, d.b.Name)
				}
			}
		}
	}
	if len(withReused) > len(r.out) {
		slices.Sort(withReused)
		if r.op.pruning.affordable(withReused) {
			r.out = withReused
		} else {
			for _, d := range r.decided {
				d.reuse = nil
			}
		}
	}
}

// evaluate fills the cluster and the matched overlays into the fleet
// (less what is left out), in one unification.
func (r *onePassRun) evaluate() (cue.Value, bool) {
	var patches []any
	for _, d := range r.decided {
		if !d.selected || d.b.invalid || len(d.matched) == 0 || d.reuse != nil {
			continue
		}
		var fields []any
		for _, field := range specFields() {
			var refs []ast.Expr
			for _, o := range d.matched {
				if slices.Contains(o.fields, field) {
					refs = append(refs, ast.NewSel(overlayRef(d.b.Name, o), field))
				}
			}
			if len(refs) > 0 {
				fields = append(fields, ast.NewIdent(field), ast.NewBinExpr(token.AND, refs...))
			}
		}
		if len(fields) > 0 {
			patches = append(patches, ast.NewString(d.b.Name), ast.NewStruct(fields...))
		}
	}
	patch := r.f.ctx.BuildExpr(ast.NewStruct(
		ast.NewIdent(fieldCluster), r.clusterExpr,
		ast.NewIdent(fieldBundles), ast.NewStruct(patches...),
	))
	if patch.Err() != nil {
		return cue.Value{}, false
	}
	root := r.op.pruning.root(r.f, r.out).Unify(patch)
	r.evaluated = true
	return root, true
}

// checkFleet checks that the evaluated fleet has the cluster the decision
// used and the rollout read when the fleet was prepared, and reads the
// cluster's place in it.
func (r *onePassRun) checkFleet(root cue.Value) bool {
	if got, err := lookup(root, fieldCluster).MarshalJSON(); err != nil || !bytes.Equal(got, r.clusterJSON) {
		return false
	}
	rv := lookup(root, fieldRollout)
	if rv.Exists() != (r.op.rollout != nil) {
		return false
	}
	if rv.Exists() {
		if got, err := rv.MarshalJSON(); err != nil || !bytes.Equal(got, r.op.rollout) {
			return false
		}
		ro, err := rolloutFor(rv, r.c, fieldRollout)
		if err != nil {
			return false
		}
		r.result.Rollout = ro
	}
	return true
}

// readBundles checks each bundle's target and overlays in the evaluated
// fleet against the decision and reads the inputs of the selected ones
// (or takes an earlier cluster's, for a reused bundle), in fleet order.
func (r *onePassRun) readBundles(bundles cue.Value) bool {
	var selected []*Bundle
	var entries []pendingEntry
	var reused []string
	for _, d := range r.decided {
		if d.b.invalid {
			selected = append(selected, d.b)
			continue
		}
		v := lookup(bundles, d.b.Name)
		pb := r.op.bundles[d.b.Name]
		switch {
		case !d.selected:
			if !pb.sameTarget(v, d.target) {
				return false
			}
			continue
		case d.reuse != nil:
			// Left out but for its target: its overlays were checked
			// when it was evaluated, and read the same cluster paths.
			if !pb.sameTarget(v, d.target) {
				return false
			}
			d.reuse.reuse(d.b)
			selected = append(selected, d.b)
			reused = append(reused, d.b.Name)
			continue
		}
		if !r.readBundle(d, pb, v) {
			return false
		}
		if d.key != "" {
			if e := r.f.memoEntry(d.b, v); e != nil {
				entries = append(entries, pendingEntry{d.key, e, d.b})
			}
		}
		selected = append(selected, d.b)
	}
	if r.op.memo != nil {
		r.op.memo.pending = entries
		for _, name := range reused {
			r.op.memo.hits[name]++
		}
	}
	r.result.Bundles = orderBundles(selected, r.f.bundles)
	attribute(r.result.Bundles, r.c.Name)
	return true
}

// readBundle reads one evaluated bundle: false when it is not as decided,
// or fails (planTwice then plans it and positions the failure).
func (r *onePassRun) readBundle(d *passDecision, pb *passBundle, v cue.Value) bool {
	if !pb.sameTarget(v, d.target) || !r.f.sameOverlays(pb, v, d.overlays, d.matched) {
		return false
	}
	r.f.finish(d.b, v)
	if d.b.Failed() {
		return false
	}
	r.f.applyTenancy(d.b, v)
	if rv := lookup(v, fieldRollout); rv.Exists() && !d.b.Failed() {
		ro, err := rolloutFor(rv, r.c, fieldRollout)
		if err != nil {
			return false
		}
		d.b.Rollout = ro
	}
	return !d.b.Failed()
}

// sameTarget reports whether the bundle's target in the evaluated fleet is
// the one the decision used, and its `when`, if evaluated per cluster, is
// still written only where it was read.
func (pb *passBundle) sameTarget(v cue.Value, decided *selector) bool {
	tv := lookup(v, "target")
	if tv.Exists() != (pb.target != nil) {
		return false
	}
	if pb.target == nil || pb.static {
		return true
	}
	return pb.target.sameIn(tv, *decided)
}

// sameIn reports whether a selector in the evaluated fleet is the decided
// one, with a per-cluster `when` written where it was read, once.
func (s passSelector) sameIn(v cue.Value, decided selector) bool {
	got, err := decodeSelector(v, "")
	return err == nil && sameSelector(got, decided) && s.sameWhen(v)
}

// sameWhen reports whether a per-cluster `when` of the selector v is
// written where it was read, once.
func (s passSelector) sameWhen(v cue.Value) bool {
	if s.whenNode == nil {
		return true
	}
	expr, err := whenExpr(lookup(v, "when"))
	return err == nil && samePlace(expr, s.whenNode)
}

// samePlace reports whether two syntax nodes are written at the same place
// (the fleet's files may have been parsed again: see prune.go).
func samePlace(a, b ast.Node) bool {
	pa, pb := a.Pos(), b.Pos()
	return pa.IsValid() && pa.Filename() == pb.Filename() && pa.Offset() == pb.Offset()
}

// sameSelector compares two selectors; an empty list is an empty list
// however it was decoded.
func sameSelector(a, b selector) bool {
	key := func(s selector) string {
		for _, l := range []**[]string{&s.Regions, &s.Names} {
			if *l != nil && **l == nil {
				*l = &[]string{}
			}
		}
		data, err := json.Marshal(s)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(data)
	}
	return key(a) == key(b)
}

// sameOverlays reports whether a selected bundle's overlays in the
// evaluated fleet are the ones the decision used: names, places and
// selectors, and for the matched ones the fields they set and that they
// refer to nothing but the cluster as evaluated (a conjunct that the
// cluster brought in through a comprehension was not there to be checked
// before).
func (f *Fleet) sameOverlays(pb *passBundle, v cue.Value, decided []selector, matched []passOverlay) bool {
	if pb.static {
		return true
	}
	list, err := overlayList(lookup(v, "overlays"))
	if err != nil || len(list) != len(pb.overlays) {
		return false
	}
	for i, o := range list {
		want := pb.overlays[i]
		if o.name != want.name || o.path != want.path || !want.sel.sameIn(o.value, decided[i]) {
			return false
		}
	}
	for _, m := range matched {
		o := list[slices.IndexFunc(pb.overlays, func(p passOverlay) bool { return p.path == m.path })]
		if !slices.Equal(overlayFields(o.value), m.fields) || !f.pureOverlay(o.value) {
			return false
		}
	}
	return true
}

// pureOverlay reports whether every conjunct of an overlay that is not the
// schema's refers to nothing but `cluster`, its own names, predeclared
// identifiers and imported packages; remembered by source.
func (f *Fleet) pureOverlay(v cue.Value) bool {
	for _, c := range conjuncts(v) {
		if c.Pos().Filename() == schemaDisplay {
			continue
		}
		src := c.Source()
		if src == nil {
			return false
		}
		pure, ok := f.onePass.pure[src]
		if !ok {
			pure = pureSource(src, f.onePass.clusterLabels, true)
			f.onePass.pure[src] = pure
		}
		if !pure {
			return false
		}
	}
	return true
}

// overlayRef is the CUE expression of an overlay of a bundle:
// bundles["web"].overlays[1] or bundles["web"].overlays["eu"].
func overlayRef(bundle string, o passOverlay) ast.Expr {
	b := ast.NewSel(&ast.IndexExpr{X: ast.NewIdent(fieldBundles), Index: ast.NewString(bundle)}, "overlays")
	var index ast.Expr
	if n, ok := overlayIndex(o.path); ok {
		index = ast.NewLit(token.INT, strconv.Itoa(n))
	} else {
		index = ast.NewString(o.name)
	}
	return &ast.IndexExpr{X: b, Index: index}
}

// overlayIndex returns n for a path "overlays[n]".
func overlayIndex(p string) (int, bool) {
	var n int
	if _, err := fmt.Sscanf(p, "overlays[%d]", &n); err != nil {
		return 0, false
	}
	return n, true
}

// overlayFields returns the spec fields an overlay sets.
func overlayFields(v cue.Value) []string {
	var out []string
	for _, field := range specFields() {
		if lookup(v, field).Exists() {
			out = append(out, field)
		}
	}
	return out
}

// conjuncts returns the values v is the unification of.
func conjuncts(v cue.Value) []cue.Value {
	if op, args := v.Expr(); op == cue.AndOp {
		return args
	}
	return []cue.Value{v}
}

// predeclared are CUE's predeclared identifiers.
var predeclared = map[string]bool{
	"_": true, "bool": true, "int": true, "float": true, "string": true, "bytes": true, "number": true,
	"null": true, "true": true, "false": true, "len": true, "close": true, "and": true, "or": true,
	"div": true, "mod": true, "quo": true, "rem": true, "rune": true,
	"int8": true, "int16": true, "int32": true, "int64": true, "int128": true,
	"uint": true, "uint8": true, "uint16": true, "uint32": true, "uint64": true, "uint128": true,
	"float32": true, "float64": true,
}

// pureSource reports whether the CUE source n refers to nothing outside
// itself but the top-level `cluster` (whose declarations' values are
// clusterLabels), predeclared identifiers and, with imports, imported
// packages.
func pureSource(n ast.Node, clusterLabels map[place]bool, imports bool) bool {
	inside := map[ast.Node]bool{}
	ast.Walk(n, func(x ast.Node) bool { inside[x] = true; return true }, nil)
	return references(n, func(x *ast.Ident) bool {
		switch {
		case x.Node == nil:
			return predeclared[x.Name]
		case inside[x.Node], clusterLabels[placeOf(x.Node)]:
			return true
		default:
			_, isImport := x.Node.(*ast.ImportSpec)
			return imports && isImport
		}
	})
}

// references calls ok for every identifier of n that refers to something
// (field labels and selectors are names, not references), until ok returns
// false; it reports whether ok held for all.
func references(n ast.Node, ok func(*ast.Ident) bool) bool {
	all := true
	var visit func(x ast.Node) bool
	walk := func(x ast.Node) {
		if x != nil {
			ast.Walk(x, visit, nil)
		}
	}
	label := func(l ast.Label) {
		switch l := l.(type) {
		case *ast.Ident, *ast.BasicLit:
		case *ast.Alias:
			if _, ok := l.Expr.(*ast.Ident); !ok {
				walk(l.Expr)
			}
		default:
			walk(l)
		}
	}
	visit = func(x ast.Node) bool {
		if !all {
			return false
		}
		switch x := x.(type) {
		case *ast.Field:
			label(x.Label)
			walk(x.Value)
			return false
		case *ast.SelectorExpr:
			walk(x.X)
			return false
		case *ast.ForClause:
			walk(x.Source)
			return false
		case *ast.LetClause:
			walk(x.Expr)
			return false
		case *ast.Alias:
			walk(x.Expr)
			return false
		case *ast.Ident:
			all = ok(x)
		}
		return true
	}
	walk(n)
	return all
}

// place is where a syntax node is written.
type place struct {
	file   string
	offset int
}

func placeOf(n ast.Node) place {
	p := n.Pos()
	if !p.IsValid() {
		return place{}
	}
	return place{p.Filename(), p.Offset()}
}

// topLevelDecls returns where the values of the top-level declarations of
// a field in the files of the fleet's package are written: what the loader
// resolves a reference to that field to (ast.Ident.Node).
func topLevelDecls(files []*ast.File, name string) map[place]bool {
	out := map[place]bool{}
	for _, file := range files {
		for _, decl := range file.Decls {
			if f, ok := decl.(*ast.Field); ok {
				if id, ok := f.Label.(*ast.Ident); ok && id.Name == name {
					out[placeOf(f.Value)] = true
				}
			}
		}
	}
	delete(out, place{})
	return out
}

// redeclaredDefinition returns a definition of Flotilla's schema that a
// file of the fleet declares too (adding to it), or "".
var schemaDefinitions = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	iter, err := schemaValue().Fields(cue.Definitions(true))
	if err != nil {
		return out
	}
	for iter.Next() {
		if iter.Selector().IsDefinition() {
			out[iter.Selector().String()] = true
		}
	}
	return out
})

func redeclaredDefinition(files []*ast.File) string {
	defs := schemaDefinitions()
	for _, file := range files {
		if file.Filename == schemaDisplay {
			continue
		}
		for _, decl := range file.Decls {
			if f, ok := decl.(*ast.Field); ok {
				if name, _, _ := ast.LabelName(f.Label); defs[name] {
					return name
				}
			}
		}
	}
	return ""
}

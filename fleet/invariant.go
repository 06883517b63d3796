package fleet

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-gitops/flotilla/internal/english"
)

// Fleet-wide invariants (issue 37): rules over every cluster's plan at
// once. Each takes the clusters its target selects, for each bundle it
// names the clusters that plan that bundle, splits them into groups
// (by region or a label), and bounds each group: how many regions, how
// many clusters, how many a selector selects, and which planned inputs
// must be the same. They are checked over plans, which vet and preview
// make for every known cluster, without rendering.

const fieldInvariants = "invariants"

// Invariant is one of the fleet's `invariants`.
type Invariant struct {
	Name        string
	description string
	target      *selector
	bundles     []string
	groupBy     string
	regions     *bound
	clusters    *bound
	counts      []countRule
	same        []sameRule
	changes     *changeRule
	promoted    *promotionRule
	within      *withinRule
	pos         token.Pos
}

// promotionRule says where a planned value must have run first.
type promotionRule struct {
	from    selector
	summary string
	paths   []string
	at      string
	pos     token.Pos
}

// changeRule bounds how many clusters of a group one commit changes.
type changeRule struct {
	Max        *int `json:"max"`
	MaxPercent *int `json:"maxPercent"`
	at         string
	pos        token.Pos
}

// OverrideTrailer is the commit trailer that lets one commit past an
// invariant's `changes` bound: "Flotilla-Override: <invariant>".
const OverrideTrailer = "Flotilla-Override"

// bound is an inclusive range, either end open; at is its path and pos
// where the fleet writes it, for messages.
type bound struct {
	Min *int `json:"min"`
	Max *int `json:"max"`
	at  string
	pos token.Pos
}

// holds reports whether n is within the bound, and says the bound.
func (b *bound) holds(n int) (bool, string) {
	switch {
	case b.Min != nil && b.Max != nil && *b.Min == *b.Max:
		return n == *b.Min, fmt.Sprintf("exactly %d required", *b.Min)
	case b.Min != nil && n < *b.Min:
		return false, fmt.Sprintf("at least %d required", *b.Min)
	case b.Max != nil && n > *b.Max:
		return false, fmt.Sprintf("at most %d allowed", *b.Max)
	}
	return true, ""
}

// countRule bounds how many clusters of a group a selector selects.
type countRule struct {
	sel     selector
	summary string
	bound
}

// sameRule is a path into a bundle's planned inputs that must be equal in
// a group; or, with objects, a field of the rendered objects that match a
// pattern (sameObjects).
type sameRule struct {
	path    string
	objects *objectField
	at      string
	pos     token.Pos
}

// Invariants returns the fleet's invariants.
func (f *Fleet) Invariants() []*Invariant { return slices.Clone(f.invariants) }

// readInvariants reads `invariants`, the same for every cluster: one that
// refers to `cluster`, or selects with `when`, is refused.
func (f *Fleet) readInvariants(files []*ast.File) Diagnostics {
	v := lookup(f.root, fieldInvariants)
	if !v.Exists() {
		return nil
	}
	if pos, ok := fieldReadsCluster(files, fieldInvariants); ok {
		return Diagnostics{diagnostic(fieldInvariants, "an invariant refers to `cluster`: invariants are over every cluster at once (choose clusters with target, group them with groupBy)", pos)}
	}
	iter, err := v.Fields()
	if err != nil {
		return fromCUE(err)
	}
	var ds Diagnostics
	for iter.Next() {
		inv, more := f.readInvariant(iter.Selector().Unquoted(), iter.Value())
		ds = append(ds, more...)
		if len(more) == 0 {
			f.invariants = append(f.invariants, inv)
		}
	}
	return ds
}

// readInvariant reads one invariant.
func (f *Fleet) readInvariant(name string, v cue.Value) (*Invariant, Diagnostics) {
	at := fieldInvariants + "." + name
	inv := &Invariant{Name: name, pos: userPos(v)}
	if err := v.Validate(); err != nil {
		return nil, fromCUE(err)
	}
	// Concrete, but for the patterns of `same` entries, which may
	// constrain (=~, >=) as policies' entries do: each part is decoded,
	// which requires it concrete.
	var plain struct {
		Description string   `json:"description"`
		Bundles     []string `json:"bundles"`
		GroupBy     string   `json:"groupBy"`
	}
	if err := v.Decode(&plain); err != nil {
		return nil, AsDiagnostics(diagnosticFrom(at, err, v))
	}
	inv.description, inv.bundles, inv.groupBy = plain.Description, plain.Bundles, plain.GroupBy
	var ds Diagnostics
	if t := lookup(v, "target"); t.Exists() {
		s, d := readFleetSelector(t, at+".target")
		if d != nil {
			return nil, Diagnostics{d}
		}
		inv.target = &s
	}
	for field, dst := range map[string]**bound{"regions": &inv.regions, "clusters": &inv.clusters} {
		if bv := lookup(v, field); bv.Exists() {
			b := &bound{at: at + "." + field, pos: userPos(bv)}
			if err := bv.Decode(b); err != nil {
				return nil, AsDiagnostics(diagnosticFrom(b.at, err, bv))
			}
			*dst = b
		}
	}
	if list, err := lookup(v, "count").List(); err == nil {
		for i := 0; list.Next(); i++ {
			cv := list.Value()
			c := countRule{bound: bound{at: fmt.Sprintf("%s.count[%d]", at, i), pos: userPos(cv)}}
			s, d := readFleetSelector(cv, c.at)
			if d != nil {
				return nil, Diagnostics{d}
			}
			if err := cv.Decode(&c.bound); err != nil {
				return nil, AsDiagnostics(diagnosticFrom(c.at, err, cv))
			}
			c.sel, c.summary = s, selectorSummary(s)
			inv.counts = append(inv.counts, c)
		}
	}
	if list, err := lookup(v, "same").List(); err == nil {
		for i := 0; list.Next(); i++ {
			r, d := f.readSame(inv, fmt.Sprintf("%s.same[%d]", at, i), list.Value())
			if d != nil {
				ds = append(ds, d)
				continue
			}
			inv.same = append(inv.same, r)
		}
	}
	if d := inv.readChangeRules(v, at); d != nil {
		return nil, Diagnostics{d}
	}
	if d := inv.readWithin(v, at); d != nil {
		return nil, Diagnostics{d}
	}
	if inv.regions == nil && inv.clusters == nil && len(inv.counts) == 0 && len(inv.same) == 0 && inv.changes == nil && inv.promoted == nil &&
		inv.within == nil && len(ds) == 0 {
		ds = append(ds, diagnostic(at, "the invariant bounds nothing: give regions, clusters, count, same, changes, promotedFrom or withinOneRevisionOf", inv.pos))
	}
	return inv, ds
}

// readChangeRules reads the rules about a change: `changes` and
// `promotedFrom`.
func (inv *Invariant) readChangeRules(v cue.Value, at string) *Diagnostic {
	if cv := lookup(v, "changes"); cv.Exists() {
		inv.changes = &changeRule{at: at + ".changes", pos: userPos(cv)}
		if err := cv.Decode(inv.changes); err != nil {
			return AsDiagnostics(diagnosticFrom(inv.changes.at, err, cv))[0]
		}
	}
	if pv := lookup(v, "promotedFrom"); pv.Exists() {
		r := &promotionRule{at: at + ".promotedFrom", pos: userPos(pv)}
		sel, d := readFleetSelector(pv, r.at)
		if d != nil {
			return d
		}
		if err := lookup(pv, "paths").Decode(&r.paths); err != nil || len(r.paths) == 0 {
			return diagnostic(r.at+".paths", "promotedFrom needs the paths of the planned inputs to follow", r.pos)
		}
		if len(inv.bundles) == 0 {
			return diagnostic(r.at, "`promotedFrom` follows a bundle's planned inputs: name the bundles with `bundles`", r.pos)
		}
		r.from, r.summary = sel, selectorSummary(sel)
		inv.promoted = r
	}
	return nil
}

// readFleetSelector reads a selector that is the same for every cluster
// (no `when`).
func readFleetSelector(v cue.Value, at string) (selector, *Diagnostic) {
	if w := lookup(v, "when"); w.Exists() {
		return selector{}, diagnostic(at+".when", "an invariant's selector cannot use `when`: choose clusters by labels, regions or names", userPos(w))
	}
	s, err := decodeSelector(v, at)
	if err != nil {
		return selector{}, AsDiagnostics(err)[0]
	}
	return s, nil
}

// selectorSummary says a selector in short, for messages:
// "role=active", "regions eu-*", "names prod-*".
func selectorSummary(s selector) string {
	var parts []string
	if s.ClusterSelector != nil {
		parts = append(parts, metav1.FormatLabelSelector(s.ClusterSelector))
	}
	if s.Regions != nil {
		parts = append(parts, "regions "+strings.Join(*s.Regions, ", "))
	}
	if s.Names != nil {
		parts = append(parts, "names "+strings.Join(*s.Names, ", "))
	}
	if len(parts) == 0 {
		return "every cluster"
	}
	return strings.Join(parts, " and ")
}

// InvariantState is what the invariants need of every plan, kept as plans
// are made (vet does not hold them): each cluster's identity, and the
// planned inputs the `same` rules compare.
type InvariantState struct {
	f *Fleet
	// live: the state is what clusters run (status branches), not what
	// they plan: a bundle counts where it is Ready, and `same` (planned
	// inputs) is not checked.
	live     bool
	clusters []Cluster
	// planned: bundle → cluster → the bundle's inputs as JSON (only for
	// bundles some invariant names).
	planned map[string]map[string]json.RawMessage
	// rendered is what the rendered rules compare (AddRendered); nil
	// when nothing was rendered, and they are not checked.
	rendered renderedValues
	// versions: bundle → cluster → what it runs (live only).
	versions map[string]map[string]BundleVersion
	// ancestor, when set, reports whether revision a is revision b or
	// one of its ancestors: withinOneRevisionOf is checked with it.
	ancestor func(a, b string) (bool, error)
}

// NewInvariantState starts the state of the fleet's invariants; nil when
// the fleet has none.
func (f *Fleet) NewInvariantState() *InvariantState {
	if len(f.invariants) == 0 {
		return nil
	}
	return &InvariantState{f: f, planned: map[string]map[string]json.RawMessage{}}
}

// NewLiveInvariantState starts the state of what the clusters run, as
// their status branches say (AddLive): `flotilla status` checks the
// invariants over it. nil when the fleet has none.
func (f *Fleet) NewLiveInvariantState() *InvariantState {
	s := f.NewInvariantState()
	if s != nil {
		s.live = true
	}
	return s
}

// AddLive adds a cluster that runs; its bundles count where they are
// Ready.
func (s *InvariantState) AddLive(r Running) {
	if s == nil {
		return
	}
	s.clusters = append(s.clusters, r.Cluster)
	for b, v := range r.Versions {
		if !s.named(b) {
			continue
		}
		if s.versions == nil {
			s.versions = map[string]map[string]BundleVersion{}
		}
		if s.versions[b] == nil {
			s.versions[b] = map[string]BundleVersion{}
		}
		s.versions[b][r.Cluster.Name] = v
	}
	for b, ready := range r.Bundles {
		if !ready || !s.named(b) {
			continue
		}
		if s.planned[b] == nil {
			s.planned[b] = map[string]json.RawMessage{}
		}
		s.planned[b][r.Cluster.Name] = nil
	}
}

// Add keeps what the invariants need of a plan. A bundle that failed to
// evaluate does not count as planned.
func (s *InvariantState) Add(p *Plan) {
	if s == nil || p == nil {
		return
	}
	s.clusters = append(s.clusters, p.Cluster)
	for _, b := range p.Bundles {
		if len(b.Errors) > 0 || !s.named(b.Name) {
			continue
		}
		data, err := json.Marshal(b.Inputs)
		if err != nil {
			continue
		}
		if s.planned[b.Name] == nil {
			s.planned[b.Name] = map[string]json.RawMessage{}
		}
		s.planned[b.Name][p.Cluster.Name] = data
	}
}

// named reports whether an invariant names the bundle.
func (s *InvariantState) named(bundle string) bool {
	for _, inv := range s.f.invariants {
		if globAny(inv.bundles, bundle) {
			return true
		}
	}
	return false
}

// Check checks every invariant over the state: a diagnostic per group
// and bound that breaks, at the bound's line, naming the invariant, the
// bundle, the group and its clusters.
func (s *InvariantState) Check() Diagnostics {
	var ds Diagnostics
	for _, b := range s.Breaks() {
		ds = append(ds, b.Diagnostic)
	}
	return ds
}

// InvariantBreak is one bound of an invariant that one group breaks.
type InvariantBreak struct {
	// Key identifies the bound and the group whatever the clusters in
	// it: the same break at two revisions has the same key.
	Key        string
	Invariant  string
	Diagnostic *Diagnostic
}

// Breaks checks every invariant over the state, as Check, keyed.
func (s *InvariantState) Breaks() []InvariantBreak {
	if s == nil {
		return nil
	}
	var out []InvariantBreak
	for _, inv := range s.f.invariants {
		out = append(out, s.check(inv)...)
		out = append(out, s.checkWithin(inv)...)
	}
	return out
}

// check checks one invariant.
func (s *InvariantState) check(inv *Invariant) []InvariantBreak {
	in := inv.targeted(s.clusters)
	if len(inv.bundles) == 0 {
		return s.checkGroups(inv, "", in)
	}
	var out []InvariantBreak
	for _, b := range s.f.bundles {
		if !globAny(inv.bundles, b) {
			continue
		}
		var planning []Cluster
		for _, c := range in {
			if _, ok := s.planned[b][c.Name]; ok {
				planning = append(planning, c)
			}
		}
		out = append(out, s.checkGroups(inv, b, planning)...)
	}
	return out
}

// checkGroups splits the clusters by groupBy and checks each group.
func (s *InvariantState) checkGroups(inv *Invariant, bundle string, clusters []Cluster) []InvariantBreak {
	groups := inv.group(clusters)
	var out []InvariantBreak
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		out = append(out, s.checkGroup(inv, bundle, key, groups[key])...)
	}
	return out
}

// targeted are the clusters the invariant's target selects.
func (inv *Invariant) targeted(clusters []Cluster) []Cluster {
	var in []Cluster
	for _, c := range clusters {
		if inv.target != nil {
			if ok, _, err := inv.target.match(c); err != nil || !ok {
				continue
			}
		}
		in = append(in, c)
	}
	return in
}

// group splits clusters by groupBy (one group "" without it).
func (inv *Invariant) group(clusters []Cluster) map[string][]Cluster {
	groups := map[string][]Cluster{}
	if inv.groupBy == "" {
		groups[""] = clusters
	}
	for _, c := range clusters {
		switch inv.groupBy {
		case "":
		case "region":
			groups[c.Region] = append(groups[c.Region], c)
		default:
			if v, ok := c.Labels[strings.TrimPrefix(inv.groupBy, "labels.")]; ok {
				groups[v] = append(groups[v], c)
			}
		}
	}
	return groups
}

// groupBreaks collects one group's breaks. A break's key is the bound's
// path, the bundle and the group (and the object, for a rendered rule):
// the same break at two revisions has the same key, whatever the clusters
// in it.
type groupBreaks struct {
	inv         *Invariant
	bundle, key string
	names       []string // the group's clusters, sorted
	out         []InvariantBreak
}

func (g *groupBreaks) add(at string, pos token.Pos, clusters []string, msg, object string) {
	d := diagnostic(at, g.inv.say(g.bundle, g.key, msg), pos)
	d.Bundle, d.Clusters = g.bundle, clusters
	g.out = append(g.out, InvariantBreak{Key: strings.Join([]string{at, g.bundle, g.key, object}, "\x00"), Invariant: g.inv.Name, Diagnostic: d})
}

// checkGroup checks one group's bounds.
func (s *InvariantState) checkGroup(inv *Invariant, bundle, key string, group []Cluster) []InvariantBreak {
	g := &groupBreaks{inv: inv, bundle: bundle, key: key, names: make([]string, 0, len(group))}
	regions := map[string][]string{}
	for _, c := range group {
		g.names = append(g.names, c.Name)
		if c.Region != "" {
			regions[c.Region] = append(regions[c.Region], c.Name)
		}
	}
	slices.Sort(g.names)
	names := g.names
	fail := func(b *bound, msg string) { g.add(b.at, b.pos, names, msg, "") }
	if b := inv.regions; b != nil {
		if ok, want := b.holds(len(regions)); !ok {
			fail(b, fmt.Sprintf("%s in %s, %s", english.Count(len(names), "cluster"), regionList(regions), want))
		}
	}
	if b := inv.clusters; b != nil {
		if ok, want := b.holds(len(names)); !ok {
			fail(b, fmt.Sprintf("%s (%s), %s", english.Count(len(names), "cluster"), listOrNone(names), want))
		}
	}
	for i := range inv.counts {
		c := &inv.counts[i]
		var selected []string
		for _, cl := range group {
			if ok, _, err := c.sel.match(cl); err == nil && ok {
				selected = append(selected, cl.Name)
			}
		}
		slices.Sort(selected)
		if ok, want := c.holds(len(selected)); !ok {
			fail(&c.bound, fmt.Sprintf("%s of %d selected by %s (%s), %s", english.Count(len(selected), "cluster"),
				len(names), c.summary, listOrNone(selected), want))
		}
	}
	for _, r := range inv.same {
		switch {
		case s.live:
			// What runs is known by digest, not by input or object.
		case r.objects != nil:
			s.checkSameObjects(g, r)
		default:
			planned := s.planned[bundle]
			if msg, _ := differs(r.path, names, func(n string) (string, bool) { return pathValue(planned[n], r.path), true }); msg != "" {
				g.add(r.at, r.pos, names, msg, "")
			}
		}
	}
	return g.out
}

// differs says how the value at a path differs across clusters, by value
// ("" when it does not), and the clusters that have it; valueOf's false
// leaves a cluster out.
func differs(path string, names []string, valueOf func(cluster string) (string, bool)) (string, []string) {
	byValue := map[string][]string{}
	var have []string
	for _, n := range names {
		if v, ok := valueOf(n); ok {
			byValue[v] = append(byValue[v], n)
			have = append(have, n)
		}
	}
	if len(byValue) < 2 {
		return "", nil
	}
	var parts []string
	for _, v := range slices.Sorted(maps.Keys(byValue)) {
		parts = append(parts, fmt.Sprintf("%s on %s", v, english.Names(byValue[v], 10)))
	}
	return fmt.Sprintf("%s differs: %s", path, strings.Join(parts, "; ")), have
}

// say words a broken bound: the invariant, what it protects, the bundle
// and the group.
func (inv *Invariant) say(bundle, key, msg string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "invariant %s", inv.Name)
	if inv.description != "" {
		fmt.Fprintf(&b, " (%s)", inv.description)
	}
	b.WriteString(" breaks")
	if bundle != "" {
		fmt.Fprintf(&b, " for bundle %s", bundle)
	}
	if inv.groupBy != "" {
		fmt.Fprintf(&b, " in group %s=%s", inv.groupBy, key)
	}
	b.WriteString(": " + msg)
	return b.String()
}

// regionList says the regions of a group and their clusters.
func regionList(regions map[string][]string) string {
	if len(regions) == 0 {
		return "no region"
	}
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(regions)) {
		parts = append(parts, fmt.Sprintf("%s (%s)", r, strings.Join(regions[r], ", ")))
	}
	return english.Count(len(regions), "region") + ": " + strings.Join(parts, ", ")
}

// listOrNone lists names, or says none.
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return english.Names(names, 10)
}

// ChangeBreaks checks the invariants' `changes` bounds against one commit:
// changed says whether the commit changes a cluster, overridden whether
// the commit overrides an invariant (its Flotilla-Override trailer).
func (s *InvariantState) ChangeBreaks(changed func(cluster string) bool, overridden func(invariant string) bool) []InvariantBreak {
	if s == nil {
		return nil
	}
	var out []InvariantBreak
	for _, inv := range s.f.invariants {
		if inv.changes == nil || overridden(inv.Name) {
			continue
		}
		groups := inv.group(inv.targeted(s.clusters))
		for _, key := range slices.Sorted(maps.Keys(groups)) {
			if d := inv.checkChanges(key, groups[key], changed); d != nil {
				out = append(out, InvariantBreak{Key: d.Path + "\x00\x00" + key, Invariant: inv.Name, Diagnostic: d})
			}
		}
	}
	return out
}

// checkChanges checks one group's changed clusters against the bound.
func (inv *Invariant) checkChanges(key string, group []Cluster, changed func(string) bool) *Diagnostic {
	var names []string
	for _, c := range group {
		if changed(c.Name) {
			names = append(names, c.Name)
		}
	}
	slices.Sort(names)
	r := inv.changes
	var want string
	switch {
	case r.Max != nil && len(names) > *r.Max:
		want = fmt.Sprintf("at most %d allowed", *r.Max)
	case r.MaxPercent != nil && len(names)*100 > *r.MaxPercent*len(group):
		want = fmt.Sprintf("at most %d%% of %d allowed", *r.MaxPercent, len(group))
	default:
		return nil
	}
	msg := fmt.Sprintf("the change touches %s (%s), %s (the trailer \"%s: %s\" in its commit lets it through)", english.Count(len(names), "cluster"),
		listOrNone(names), want, OverrideTrailer, inv.Name)
	d := diagnostic(r.at, inv.say("", key, msg), r.pos)
	d.Clusters = names
	return d
}

// PromotionBreaks checks the invariants' `promotedFrom` rules against a
// change from base to head: a value the change brings to a path of a
// bundle on a cluster of the rule must be the value planned at base on one
// of the clusters promotedFrom selects, where readyAtBase says the bundle
// runs Ready at the base revision (its status branch).
func PromotionBreaks(base, head *InvariantState, readyAtBase func(cluster, bundle string) bool) []InvariantBreak {
	if base == nil || head == nil {
		return nil
	}
	var out []InvariantBreak
	for _, inv := range head.f.invariants {
		r := inv.promoted
		if r == nil {
			continue
		}
		for _, b := range head.f.bundles {
			if !globAny(inv.bundles, b) {
				continue
			}
			for _, p := range r.paths {
				if d := inv.checkPromotion(b, p, base, head, readyAtBase); d != nil {
					out = append(out, InvariantBreak{Key: d.Path + "\x00" + b + "\x00" + p, Invariant: inv.Name, Diagnostic: d})
				}
			}
		}
	}
	return out
}

// checkPromotion checks one bundle and path.
func (inv *Invariant) checkPromotion(bundle, p string, base, head *InvariantState, readyAtBase func(cluster, bundle string) bool) *Diagnostic {
	r := inv.promoted
	ran := map[string]bool{} // values that ran Ready at base on the clusters promoted from
	for _, c := range base.clusters {
		in, ok := base.planned[bundle][c.Name]
		if matched, _, err := r.from.match(c); ok && err == nil && matched && readyAtBase(c.Name, bundle) {
			ran[pathValue(in, p)] = true
		}
	}
	byValue := map[string][]string{}
	for _, c := range inv.targeted(head.clusters) {
		now, ok := head.planned[bundle][c.Name]
		if !ok {
			continue
		}
		v := pathValue(now, p)
		if before, was := base.planned[bundle][c.Name]; (was && pathValue(before, p) == v) || ran[v] {
			continue
		}
		byValue[v] = append(byValue[v], c.Name)
	}
	if len(byValue) == 0 {
		return nil
	}
	var parts, names []string
	for _, v := range slices.Sorted(maps.Keys(byValue)) {
		parts = append(parts, fmt.Sprintf("%s on %s", v, strings.Join(byValue[v], ", ")))
		names = append(names, byValue[v]...)
	}
	slices.Sort(names)
	msg := fmt.Sprintf("%s reaches clusters before it ran Ready on %s at the base revision: %s", p, r.summary, strings.Join(parts, "; "))
	ungrouped := *inv // the rule follows each cluster, in no group
	ungrouped.groupBy = ""
	d := diagnostic(r.at, ungrouped.say(bundle, "", msg), r.pos)
	d.Bundle, d.Clusters = bundle, names
	return d
}

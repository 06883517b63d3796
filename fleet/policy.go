package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/token"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const fieldPolicies = "policies"

// Policy is one entry of the fleet's `policies`: patterns that the
// rendered objects of the clusters it holds for must (require), must not
// (forbid) or, when they match, must further (constrain) match.
type Policy struct {
	Name       string
	target     *selector
	bundles    []string
	namespaces []string
	rules      []*policyRule
	pos        token.Pos
}

// policyRule is one require, forbid or constrain entry.
type policyRule struct {
	id      string // policies.<name>.<kind>[<i>], for messages and the memo
	kind    string
	pattern cue.Value // the entry; for constrain, the entry without match
	match   cue.Value // constrain only
	pos     token.Pos
	fields  []string // the pattern's leaf paths, for messages
	summary string   // the pattern in short, for messages
}

// Policies returns the fleet's policies, by name.
func (f *Fleet) Policies() []*Policy { return slices.Clone(f.policies) }

// PoliciesDigest identifies what the fleet's policies say, wherever they
// are written: two fleets with the same digest find the same violations in
// the same objects. "" without policies.
func (f *Fleet) PoliciesDigest() string { return f.policiesDigest }

// digestPolicies digests the evaluated policies as CUE (references to
// helpers resolved, no positions or comments).
func digestPolicies(v cue.Value) string {
	src, err := format.Node(v.Syntax(cue.Final(), cue.Docs(false)))
	if err != nil {
		return "" // compared as different from anything
	}
	sum := sha256.Sum256(src)
	return hex.EncodeToString(sum[:])
}

// readPolicies reads `policies`. They are the same for every cluster:
// one that depends on `cluster` is refused, as is a target with `when`.
func (f *Fleet) readPolicies(files []*ast.File) Diagnostics {
	v := lookup(f.root, fieldPolicies)
	if !v.Exists() {
		return nil
	}
	iter, err := v.Fields()
	if err != nil {
		return fromCUE(err)
	}
	if pos, ok := fieldReadsCluster(files, fieldPolicies); ok {
		return Diagnostics{diagnostic(fieldPolicies, "a policy refers to `cluster`: policies are the same for every cluster (choose clusters with target)", pos)}
	}
	var ds Diagnostics
	for iter.Next() {
		name := iter.Selector().Unquoted()
		pv := iter.Value()
		at := fieldPolicies + "." + name
		p := &Policy{Name: name, pos: userPos(pv)}
		if err := pv.Validate(); err != nil {
			ds = append(ds, fromCUE(err)...)
			continue
		}

		if t := lookup(pv, "target"); t.Exists() {
			if lookup(t, "when").Exists() {
				ds = append(ds, diagnostic(at+".target.when", "a policy's target cannot use `when`: choose clusters by labels, regions or names", userPos(lookup(t, "when"))))
				continue
			}
			s, err := decodeSelector(t, at+".target")
			if err != nil {
				ds = append(ds, AsDiagnostics(err)...)
				continue
			}
			p.target = &s
		}
		for field, dst := range map[string]*[]string{"bundles": &p.bundles, "namespaces": &p.namespaces} {
			if fv := lookup(pv, field); fv.Exists() {
				if err := fv.Decode(dst); err != nil {
					ds = append(ds, diagnostic(at+"."+field, "must be a list of glob patterns, the same for every cluster: "+err.Error(), userPos(fv)))
				}
			}
		}
		for _, kind := range []string{"require", "forbid", "constrain"} {
			list, err := lookup(pv, kind).List()
			if err != nil {
				if lookup(pv, kind).Exists() {
					ds = append(ds, fromCUE(err)...)
				}
				continue
			}
			for i := 0; list.Next(); i++ {
				r, d := f.readRule(at, kind, i, list.Value())
				if d != nil {
					ds = append(ds, d)
					continue
				}
				p.rules = append(p.rules, r)
			}
		}
		f.policies = append(f.policies, p)
	}
	f.policyCount = len(f.policies)
	if len(ds) == 0 && len(f.policies) > 0 {
		f.policiesDigest = digestPolicies(v)
	}
	return ds
}

// fieldReadsCluster finds a reference to the top-level `cluster` in what
// the files write under a top-level field (`policies`, `invariants`): an
// identifier of that name that resolves to a top-level declaration, or
// that the parser left to the package scope; and where.
func fieldReadsCluster(files []*ast.File, name string) (token.Pos, bool) {
	decls := topLevelDecls(files, fieldCluster)
	for _, file := range files {
		for _, decl := range file.Decls {
			field, ok := decl.(*ast.Field)
			if !ok {
				continue
			}
			if id, ok := field.Label.(*ast.Ident); !ok || id.Name != name {
				continue
			}
			var at token.Pos
			clean := references(field.Value, func(x *ast.Ident) bool {
				if x.Name == fieldCluster && (x.Node == nil || decls[placeOf(x.Node)]) {
					at = x.Pos()
					return false
				}
				return true
			})
			if !clean {
				return at, true
			}
		}
	}
	return token.NoPos, false
}

func (f *Fleet) readRule(at, kind string, i int, v cue.Value) (*policyRule, *Diagnostic) {
	r := &policyRule{id: fmt.Sprintf("%s.%s[%d]", at, kind, i), kind: kind, pattern: v, pos: userPos(v)}
	if kind == "constrain" {
		r.match = lookup(v, "match")
		rest := f.ctx.CompileString("{}")
		iter, err := v.Fields(cue.Optional(true))
		if err != nil {
			return nil, diagnostic(r.id, err.Error(), r.pos)
		}
		for iter.Next() {
			if iter.Selector().String() != "match" {
				rest = rest.FillPath(cue.MakePath(iter.Selector()), iter.Value())
			}
		}
		r.pattern = rest
	}
	if err := r.pattern.Err(); err != nil {
		return nil, diagnostic(r.id, "the policy cannot be read (does it depend on `cluster`? policies are the same for every cluster): "+err.Error(), r.pos)
	}
	r.fields = leafPaths(r.pattern, "")
	r.summary = patternSummary(r.pattern)
	return r, nil
}

// patternSummary says a pattern on one line, for messages:
// {kind: "Deployment", metadata: {namespace: =~"^team-"}}.
func patternSummary(v cue.Value) string {
	syn, err := format.Node(v.Syntax(cue.Raw()), format.Simplify())
	if err != nil {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(string(syn), "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" && l != "..." {
			lines = append(lines, l)
		}
	}
	summary := strings.NewReplacer("{, ", "{", ", }", "}").Replace(strings.Join(lines, ", "))
	if len(summary) > 160 {
		summary = summary[:157] + "…"
	}
	return summary
}

// leafPaths lists the dotted paths of a pattern's fields that are not
// structs, apiVersion and kind left out at the top.
func leafPaths(v cue.Value, prefix string) []string {
	iter, err := v.Fields(cue.Optional(true))
	if err != nil {
		return nil
	}
	var out []string
	for iter.Next() {
		name := iter.Selector().Unquoted()
		if prefix == "" && (name == "apiVersion" || name == "kind") {
			continue
		}
		if iter.Value().IncompleteKind() == cue.StructKind {
			out = append(out, leafPaths(iter.Value(), prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

// RenderedBundle is a bundle's rendered objects, for CheckPolicies.
type RenderedBundle struct {
	Name    string
	Objects []*unstructured.Unstructured
}

// policyObject is an object being checked, with what the checks need.
type policyObject struct {
	bundle string
	key    string // Kind namespace/name
	data   any    // the object as JSON values (float64 numbers)
	hash   string
	v      cue.Value
}

// CheckPolicies checks a cluster's rendered objects against every policy
// that holds for it. Problems name the policy's entry and its line, the
// cluster, the bundle, the object and the field. Call it from one
// goroutine per Fleet (it evaluates in the Fleet's CUE context, and
// remembers which object matched which entry, for the next cluster).
func (f *Fleet) CheckPolicies(c Cluster, bundles []RenderedBundle) Diagnostics {
	if len(f.policies) == 0 {
		return nil
	}
	c = c.Normalized()
	objects := policyObjects(bundles)
	var ds Diagnostics
	for _, p := range f.policies {
		if !p.holdsFor(c) {
			continue
		}
		var scope []*policyObject
		for _, o := range objects {
			if p.inScope(o) {
				scope = append(scope, o)
			}
		}
		for _, r := range p.rules {
			ds = append(ds, f.checkRule(c, p, r, scope)...)
		}
	}
	return ds
}

// policyObjects are the rendered objects, as the patterns match them.
func policyObjects(bundles []RenderedBundle) []*policyObject {
	var objects []*policyObject
	for _, b := range bundles {
		for _, o := range b.Objects {
			data, err := json.Marshal(o.Object)
			if err != nil {
				continue
			}
			sum := sha256.Sum256(data)
			po := &policyObject{bundle: b.Name, key: objectKey(o), hash: hex.EncodeToString(sum[:])}
			if err := json.Unmarshal(data, &po.data); err != nil {
				continue
			}
			objects = append(objects, po)
		}
	}
	return objects
}

// PolicyViolations checks as CheckPolicies does and gives each bundle the
// problems it must fail with before anything of it is applied: a forbid or
// constrain problem fails the bundle whose object it names; a require
// problem fails every bundle in the policy's scope (its bundles, or all),
// as any of them may be the one that lost the required object. It is
// JoinPolicyParts of every bundle's CheckBundlePolicies.
func (f *Fleet) PolicyViolations(c Cluster, bundles []RenderedBundle) map[string]Diagnostics {
	parts := map[string]PolicyPart{}
	for _, b := range bundles {
		parts[b.Name] = f.CheckBundlePolicies(c, b)
	}
	return JoinPolicyParts(parts)
}

// PolicyPart is one bundle's share of a cluster's policy check, made
// without the other bundles' objects: so that each bundle is checked in a
// worker of its own, bounded alone (one bundle too large to check fails
// alone, not the cluster).
type PolicyPart struct {
	// Violations are the bundle's forbid and constrain problems.
	Violations Diagnostics `json:"violations,omitempty"`
	// Required are the require entries whose policy takes in the bundle.
	Required []Requirement `json:"required,omitempty"`
}

// Requirement is a require entry as one bundle sees it.
type Requirement struct {
	// Path is the entry's (policies.<name>.require[i]).
	Path string `json:"path"`
	// Met: one of the bundle's objects matches it.
	Met bool `json:"met,omitempty"`
	// Problem is what every bundle of the entry's scope fails with when no
	// bundle of the cluster meets it.
	Problem *Diagnostic `json:"problem"`
}

// CheckBundlePolicies checks one bundle's rendered objects against every
// policy that holds for the cluster (see PolicyViolations).
func (f *Fleet) CheckBundlePolicies(c Cluster, b RenderedBundle) PolicyPart {
	var part PolicyPart
	for _, d := range f.CheckPolicies(c, []RenderedBundle{b}) {
		if d.Bundle != "" {
			part.Violations = append(part.Violations, d)
			continue
		}
		// A require entry none of this bundle's objects meets.
		if p := f.policyOf(d.Path); p == nil || p.covers(b.Name) {
			part.Required = append(part.Required, Requirement{Path: d.Path, Problem: d})
		}
	}
	// The require entries it meets.
	unmet := map[string]bool{}
	for _, r := range part.Required {
		unmet[r.Path] = true
	}
	for _, p := range f.policies {
		if !p.covers(b.Name) || !p.holdsFor(c) {
			continue
		}
		for _, r := range p.rules {
			if r.kind == "require" && !unmet[r.id] {
				part.Required = append(part.Required, Requirement{Path: r.id, Met: true})
			}
		}
	}
	return part
}

// JoinPolicyParts gives each bundle the problems it must fail with, from
// every bundle's part: its own violations, and each require entry that no
// bundle meets, for every bundle of its scope.
func JoinPolicyParts(parts map[string]PolicyPart) map[string]Diagnostics {
	met := map[string]bool{}
	for _, part := range parts {
		for _, r := range part.Required {
			met[r.Path] = met[r.Path] || r.Met
		}
	}
	out := map[string]Diagnostics{}
	for _, name := range slices.Sorted(maps.Keys(parts)) {
		part := parts[name]
		out[name] = append(out[name], part.Violations...)
		for _, r := range part.Required {
			if !met[r.Path] && r.Problem != nil {
				d := *r.Problem
				d.Bundle = name
				out[name] = append(out[name], &d)
			}
		}
		if len(out[name]) == 0 {
			delete(out, name)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// covers reports whether the policy's bundles (all without them) take in
// the bundle.
func (p *Policy) covers(bundle string) bool {
	return len(p.bundles) == 0 || globAny(p.bundles, bundle)
}

// holdsFor reports whether the policy's target selects the cluster.
func (p *Policy) holdsFor(c Cluster) bool {
	if p.target == nil {
		return true
	}
	ok, _, err := p.target.match(c)
	return err == nil && ok
}

// policyOf is the policy of a rule's path (policies.<name>.<kind>[i]).
func (f *Fleet) policyOf(path string) *Policy {
	for _, p := range f.policies {
		if strings.HasPrefix(path, fieldPolicies+"."+p.Name+".") {
			return p
		}
	}
	return nil
}

// inScope reports whether the policy's bundles and namespaces take in the
// object.
func (p *Policy) inScope(o *policyObject) bool {
	if !p.covers(o.bundle) {
		return false
	}
	if len(p.namespaces) > 0 {
		ns, _, _ := unstructured.NestedString(o.data.(map[string]any), "metadata", "namespace")
		return ns != "" && globAny(p.namespaces, ns)
	}
	return true
}

func globAny(patterns []string, s string) bool {
	ok, _, _ := matchGlobs("", s, patterns)
	return ok
}

func (f *Fleet) checkRule(c Cluster, p *Policy, r *policyRule, scope []*policyObject) Diagnostics {
	diag := func(bundle, msg string) *Diagnostic {
		return &Diagnostic{Clusters: []string{c.Name}, Bundle: bundle, Path: r.id, Message: msg, Positions: positionsOf([]token.Pos{r.pos})}
	}
	switch r.kind {
	case "require":
		for _, o := range scope {
			if ok, _ := f.matches(r.id, r.pattern, o); ok {
				return nil
			}
		}
		return Diagnostics{diag("", fmt.Sprintf("policy %s requires an object matching %s; none of the cluster's objects%s does", p.Name, r.summary, p.scopeText()))}
	case "forbid":
		var ds Diagnostics
		for _, o := range scope {
			if ok, _ := f.matches(r.id, r.pattern, o); ok {
				ds = append(ds, diag(o.bundle, fmt.Sprintf("policy %s forbids %s: %s matches it (%s)", p.Name, r.summary, o.key, strings.Join(r.fields, ", "))))
			}
		}
		return ds
	default: // constrain
		var ds Diagnostics
		for _, o := range scope {
			if ok, _ := f.matches(r.id+".match", r.match, o); !ok {
				continue
			}
			if ok, why := f.matches(r.id, r.pattern, o); !ok {
				ds = append(ds, diag(o.bundle, fmt.Sprintf("policy %s: %s must match %s: %s", p.Name, o.key, r.summary, why)))
			}
		}
		return ds
	}
}

func (p *Policy) scopeText() string {
	var parts []string
	if len(p.bundles) > 0 {
		parts = append(parts, "bundles "+strings.Join(p.bundles, ", "))
	}
	if len(p.namespaces) > 0 {
		parts = append(parts, "namespaces "+strings.Join(p.namespaces, ", "))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (in " + strings.Join(parts, ", ") + ")"
}

// policyMatch is a remembered outcome of matching an object with an entry.
type policyMatch struct {
	ok  bool
	why string
}

// matches reports whether the object matches the pattern: unified, it is
// valid and concrete and gains nothing (every field the pattern gives,
// the object has, with a value the pattern accepts). Otherwise why names
// the first field that is missing or does not fit.
func (f *Fleet) matches(id string, pattern cue.Value, o *policyObject) (bool, string) {
	key := id + "\x00" + o.hash
	if m, ok := f.policyMemo[key]; ok {
		return m.ok, m.why
	}
	ok, why := f.match(pattern, o)
	if f.policyMemo == nil {
		f.policyMemo = map[string]policyMatch{}
	}
	f.policyMemo[key] = policyMatch{ok, why}
	return ok, why
}

func (f *Fleet) match(pattern cue.Value, o *policyObject) (bool, string) {
	if !o.v.Exists() {
		o.v = f.ctx.Encode(o.data)
	}
	u := o.v.Unify(pattern)
	if err := u.Validate(cue.Concrete(true)); err != nil {
		ds := fromCUE(err)
		if len(ds) > 0 {
			if strings.Contains(ds[0].Message, "incomplete") || strings.Contains(ds[0].Message, "non-concrete") {
				return false, ds[0].Path + " is missing"
			}
			return false, ds[0].Path + ": " + ds[0].Message
		}
		return false, err.Error()
	}
	raw, err := u.MarshalJSON()
	if err != nil {
		return false, err.Error()
	}
	var got any
	if err := json.Unmarshal(raw, &got); err != nil {
		return false, err.Error()
	}
	if reflect.DeepEqual(got, o.data) {
		return true, ""
	}
	return false, addedPath(got, o.data, "") + " is missing"
}

// addedPath is the first path where got has what want has not.
func addedPath(got, want any, prefix string) string {
	switch g := got.(type) {
	case map[string]any:
		w, _ := want.(map[string]any)
		keys := make([]string, 0, len(g))
		for k := range g {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			wv, ok := w[k]
			if !ok {
				return prefix + k
			}
			if !reflect.DeepEqual(g[k], wv) {
				return addedPath(g[k], wv, prefix+k+".")
			}
		}
	case []any:
		w, _ := want.([]any)
		for i := range g {
			if i >= len(w) || !reflect.DeepEqual(g[i], w[i]) {
				var wi any
				if i < len(w) {
					wi = w[i]
				}
				return addedPath(g[i], wi, prefix+strconv.Itoa(i)+".")
			}
		}
	}
	return strings.TrimSuffix(prefix, ".")
}

// objectKey is Kind namespace/name.
func objectKey(o *unstructured.Unstructured) string {
	name := o.GetName()
	if ns := o.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return o.GetKind() + " " + name
}

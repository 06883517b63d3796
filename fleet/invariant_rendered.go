package fleet

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"cuelang.org/go/cue"
)

// Rendered rules of the invariants: a `same` entry {match, field}
// compares a field of the rendered objects that match a pattern (as a
// policy's entry matches) across the clusters of a group — "a CRD serves
// the same versions on every prod cluster", whichever chart or
// kustomization renders it. They need every cluster rendered: `flotilla
// vet --invariants` and `flotilla preview` render and give the objects to
// AddRendered; without it they are not checked.

// objectField is a rendered rule: the objects a pattern matches, and the
// field of theirs that must be the same.
type objectField struct {
	match cue.Value
	field string
}

// readSame reads one entry of `same`: a path into the planned inputs
// (which needs `bundles`), or {match, field}.
func (f *Fleet) readSame(inv *Invariant, at string, v cue.Value) (sameRule, *Diagnostic) {
	r := sameRule{at: at, pos: userPos(v)}
	if v.IncompleteKind() == cue.StringKind {
		p, err := v.String()
		if err != nil {
			return r, AsDiagnostics(diagnosticFrom(at, err, v))[0]
		}
		if len(inv.bundles) == 0 {
			return r, diagnostic(at, "`same` compares a bundle's planned inputs: name the bundles with `bundles`", r.pos)
		}
		r.path = p
		return r, nil
	}
	m := lookup(v, "match")
	field, err := lookup(v, "field").String()
	if !m.Exists() || m.IncompleteKind() != cue.StructKind || err != nil || field == "" {
		return r, diagnostic(at, `a `+"`same`"+` entry is a path into the planned inputs ("values.image.tag"), or {match: {...}, field: "spec.versions.*.name"} over the rendered objects`, r.pos)
	}
	if err := m.Err(); err != nil {
		return r, diagnostic(at+".match", "the pattern cannot be read (does it depend on `cluster`?): "+err.Error(), r.pos)
	}
	r.path = field
	r.objects = &objectField{match: m, field: field}
	return r, nil
}

// RenderedInvariants counts the invariants' rules over rendered objects:
// vet renders every cluster for them with --invariants.
func (f *Fleet) RenderedInvariants() int {
	n := 0
	for _, inv := range f.invariants {
		for _, r := range inv.same {
			if r.objects != nil {
				n++
			}
		}
	}
	return n
}

// renderedValues: rule (its path) → bundle ("" for a rule without
// bundles) → cluster → object (Kind namespace/name) → the field's value.
type renderedValues map[string]map[string]map[string]map[string]string

// AddRendered keeps what the rendered rules need of a cluster's rendered
// bundles: the field of every object a rule's pattern matches. Once it is
// called, Check checks the rendered rules (over the clusters rendered).
// Call it from one goroutine per Fleet, as CheckPolicies (it may run
// beside Add, which keeps other fields).
func (s *InvariantState) AddRendered(c Cluster, bundles []RenderedBundle) {
	if s == nil {
		return
	}
	if s.rendered == nil {
		s.rendered = renderedValues{}
	}
	if s.f.RenderedInvariants() == 0 {
		return
	}
	objects := policyObjects(bundles)
	for _, inv := range s.f.invariants {
		for _, r := range inv.same {
			if r.objects == nil {
				continue
			}
			for _, o := range objects {
				bundle := ""
				if len(inv.bundles) > 0 {
					if !globAny(inv.bundles, o.bundle) {
						continue
					}
					bundle = o.bundle
				}
				if ok, _ := s.f.matches(r.at, r.objects.match, o); !ok {
					continue
				}
				byBundle := s.rendered[r.at]
				if byBundle == nil {
					byBundle = map[string]map[string]map[string]string{}
					s.rendered[r.at] = byBundle
				}
				if byBundle[bundle] == nil {
					byBundle[bundle] = map[string]map[string]string{}
				}
				if byBundle[bundle][c.Name] == nil {
					byBundle[bundle][c.Name] = map[string]string{}
				}
				byBundle[bundle][c.Name][o.key] = valueText(o.data, r.objects.field)
			}
		}
	}
}

// checkSameObjects checks a rendered rule over one group: each object the
// rule's pattern matches has the same field on every cluster of the group
// that has it (a cluster without the object is not compared: `require`
// in a policy says it must be there).
func (s *InvariantState) checkSameObjects(g *groupBreaks, r sameRule) {
	if s.rendered == nil {
		return // not rendered: vet --invariants and preview render
	}
	byCluster := s.rendered[r.at][g.bundle]
	objects := map[string]bool{}
	for _, n := range g.names {
		for o := range byCluster[n] {
			objects[o] = true
		}
	}
	for _, o := range slices.Sorted(maps.Keys(objects)) {
		msg, clusters := differs(r.objects.field, g.names, func(n string) (string, bool) {
			v, ok := byCluster[n][o]
			return v, ok
		})
		if msg != "" {
			g.add(r.at, r.pos, clusters, o+": "+msg, o)
		}
	}
}

// pathValue is the JSON at a dotted path of a document, as valueText says
// it.
func pathValue(doc json.RawMessage, p string) string {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return absent
	}
	return valueText(v, p)
}

const absent = "<absent>"

// valueText is the JSON at a dotted path of a value, compact ("<absent>"
// when there is none). A "*" takes every item of a list: the path
// "spec.versions.*.name" of a CRD is the list of its versions' names. A
// value over 100 bytes is cut, with a digest of the whole.
func valueText(v any, p string) string {
	v, ok := valueAt(v, strings.Split(p, "."))
	if !ok {
		return absent
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return absent
	}
	text := strings.TrimSpace(buf.String())
	if len(text) > 100 {
		sum := sha256.Sum256([]byte(text))
		text = fmt.Sprintf("%s… (sha256:%s)", text[:80], hex.EncodeToString(sum[:6]))
	}
	return text
}

// valueAt walks a path into a JSON value.
func valueAt(v any, path []string) (any, bool) {
	if len(path) == 0 {
		return v, true
	}
	if path[0] == "*" {
		list, ok := v.([]any)
		if !ok {
			return nil, false
		}
		out := []any{}
		for _, item := range list {
			if x, ok := valueAt(item, path[1:]); ok {
				out = append(out, x)
			}
		}
		return out, true
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	x, ok := m[path[0]]
	if !ok {
		return nil, false
	}
	return valueAt(x, path[1:])
}

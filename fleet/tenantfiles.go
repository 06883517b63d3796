package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"
)

// Tenancy by contribution. Owning a bundle by name is not enough: CUE lets
// any file of the package add to any value, so a team's file could add an
// overlay to a platform bundle (a ClusterRoleBinding to cluster-admin,
// rendered and applied with the agent's identity). Each tenant therefore
// names its files (tenancy.tenants.X.files), and a tenant's file may add
// only to that tenant's bundles.
//
// The rule is checked on the files' syntax, not on the evaluated values: in
// CUE a value reaches a field only through a declaration at that field's
// path — a field, a pattern constraint, an embedding or a comprehension that
// emits it — or through a reference that copies it. A file whose top level
// holds only `bundles: "<own bundle>": …` with literal names (plus imports
// and let clauses, which CUE scopes to the file) can therefore contribute
// to nothing else, whatever the cluster: a top-level `if`, a pattern
// (`bundles: [string]: …`), a hidden field or definition another file may
// refer to (`_x`, `#X`, shared by the whole package) are refused. What a
// platform file copies from a tenant's bundle is the platform's choice.
// Checking syntax also covers contributions that only some clusters
// evaluate, which no evaluation at load time would see.

// tenantFiles maps the fleet's files (relative to the fleet's folder) to
// the tenant whose `files` patterns match them. A file two tenants claim is
// a problem of the policy.
func (f *Fleet) tenantFiles(names []string, policy token.Pos) (map[string]string, Diagnostics) {
	owners := map[string]string{}
	var ds Diagnostics
	tenants := slices.Sorted(maps.Keys(f.tenancy.Tenants))
	for _, name := range names {
		var claims []string
		for _, t := range tenants {
			// Case aside: a file a tenant's pattern matches but for case
			// (Payments-x.cue) is the tenant's, not the platform's.
			if ok, _, _ := matchGlobs("file", strings.ToLower(name), lower(f.tenancy.Tenants[t].Files)); ok {
				claims = append(claims, t)
			}
		}
		switch len(claims) {
		case 0:
		case 1:
			owners[name] = claims[0]
		default:
			ds = append(ds, diagnostic(fieldTenancy+".tenants", fmt.Sprintf(
				"file %s belongs to tenants %s (their files patterns): a file may belong to one tenant at most",
				name, strings.Join(claims, " and ")), policy))
		}
	}
	return owners, ds
}

// checkContributions checks every tenant's file: its top level may hold
// only its tenant's bundles, imports and let clauses. A file that adds to
// a bundle of another owner fails that bundle in every plan (it keeps its
// last good state in every cluster; the fleet's other bundles go on); a
// declaration that could add to anything (a pattern, an embedding, a
// top-level field other than `bundles`) fails the fleet.
func (f *Fleet) checkContributions(files []*ast.File, inFolder map[string]string, policy token.Pos) Diagnostics {
	if f.tenancy == nil {
		return nil
	}
	byName := map[string]*ast.File{}
	for _, file := range files {
		if file.Filename == schemaDisplay {
			continue
		}
		name, ok := inFolder[file.Filename]
		if !ok {
			// Every loaded file is in the map: one that is not could
			// escape the check, so the fleet does not load.
			return Diagnostics{diagnostic("", fmt.Sprintf("file %s: its place in the repository is unknown, so the tenancy policy cannot tell whose it is", file.Filename), policy)}
		}
		byName[name] = file
	}
	owners, ds := f.tenantFiles(slices.Sorted(maps.Keys(byName)), policy)
	for _, name := range slices.Sorted(maps.Keys(owners)) {
		c := contribution{f: f, file: name, tenant: owners[name]}
		for _, d := range byName[name].Decls {
			ds = append(ds, c.topLevel(d)...)
		}
	}
	return ds
}

// contribution checks the declarations of one tenant's file.
type contribution struct {
	f      *Fleet
	file   string
	tenant string
}

// refuse is a problem with a declaration that could add to anything.
func (c contribution) refuse(at token.Pos, what string) Diagnostics {
	return Diagnostics{diagnostic("", fmt.Sprintf(
		"tenant %s's file (tenancy.tenants.%s.files) may add only to its own bundles, and %s: write `bundles: \"<bundle>\": {…}` with literal names, any condition inside the bundle",
		c.tenant, c.tenant, what), at)}
}

// topLevel checks one top-level declaration.
func (c contribution) topLevel(d ast.Decl) Diagnostics {
	switch d := d.(type) {
	case *ast.Package, *ast.ImportDecl, *ast.CommentGroup, *ast.Attribute, *ast.LetClause:
		return nil
	case *ast.Field:
		name, _, err := ast.LabelName(d.Label)
		if err != nil || name != fieldBundles {
			return c.refuse(d.Pos(), fmt.Sprintf("it declares the top-level field %s", labelText(d.Label)))
		}
		return c.bundles(d.Value)
	case *ast.EmbedDecl:
		return c.refuse(d.Pos(), "it embeds a value at the top level")
	case *ast.Comprehension:
		return c.refuse(d.Pos(), "it has a top-level comprehension (`if` or `for`), which can emit any field")
	default:
		return c.refuse(d.Pos(), "it has a top-level declaration other than a field")
	}
}

// bundles checks the value of a tenant file's `bundles`: a struct of
// bundles named literally, each the tenant's own.
func (c contribution) bundles(v ast.Expr) Diagnostics {
	s, ok := v.(*ast.StructLit)
	if !ok {
		return c.refuse(v.Pos(), "its `bundles` is not a struct of bundles named literally")
	}
	var ds Diagnostics
	for _, d := range s.Elts {
		switch d := d.(type) {
		case *ast.CommentGroup, *ast.Attribute, *ast.LetClause:
		case *ast.Field:
			name, _, err := ast.LabelName(d.Label)
			if err != nil {
				ds = append(ds, c.refuse(d.Pos(), fmt.Sprintf("the bundle label %s is not a literal name (a pattern or computed label can add to any bundle)", labelText(d.Label)))...)
				continue
			}
			c.bundle(name, d.Label.Pos())
		default:
			ds = append(ds, c.refuse(d.Pos(), "its `bundles` holds an embedding, comprehension or pattern, which can add to any bundle")...)
		}
	}
	return ds
}

// bundle fails a bundle the tenant's file adds to unless it is the
// tenant's own. (A bundle without one owner already fails, saying so.)
func (c contribution) bundle(name string, at token.Pos) {
	o, known := c.f.owners[name]
	if !known || !o.platform && o.tenant == c.tenant {
		return
	}
	whose := "the platform"
	if !o.platform {
		whose = "tenant " + o.tenant
	}
	c.f.bundleErrs[name] = append(c.f.bundleErrs[name], &Diagnostic{
		Bundle: name,
		Message: fmt.Sprintf("tenant %s's file %s adds to this bundle, which belongs to %s: a tenant's files (tenancy.tenants.%s.files) may add only to its own bundles",
			c.tenant, c.file, whose, c.tenant),
		Positions: positionsOf([]token.Pos{at}),
	})
}

// labelText shows a label as written, for messages.
func labelText(l ast.Label) string {
	switch l := l.(type) {
	case *ast.Ident:
		return l.Name
	case *ast.BasicLit:
		return l.Value
	case *ast.ListLit:
		return "[…] (a pattern)"
	default:
		return "(computed)"
	}
}

func lower(patterns []string) []string {
	out := make([]string, len(patterns))
	for i, p := range patterns {
		out[i] = strings.ToLower(p)
	}
	return out
}

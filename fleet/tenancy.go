package fleet

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"
)

// fieldTenancy is the fleet's tenancy policy.
const fieldTenancy = "tenancy"

// Tenancy is the Go form of #Tenancy: which bundles belong to which team,
// and what each team's bundles may use.
type Tenancy struct {
	// Platform are glob patterns of the platform team's bundles.
	Platform []string `json:"platform"`
	// Tenants by name.
	Tenants map[string]Tenant `json:"tenants"`
}

// Tenant is the Go form of #Tenant.
type Tenant struct {
	Bundles         []string `json:"bundles"`
	Namespaces      []string `json:"namespaces"`
	ServiceAccounts []string `json:"serviceAccounts"`
	ClusterKinds    []string `json:"clusterKinds"`
	// Files are glob patterns of the fleet's CUE files (in the fleet's
	// folder) the tenant writes: they may add only to its bundles.
	Files []string `json:"files"`
}

// Grant is what the tenancy policy lets one tenant's bundle render: the
// renderer's output is checked against it before anything is applied (an
// object in another tenant's namespace, or a cluster-scoped object of a
// kind not granted, fails the bundle).
type Grant struct {
	Tenant string `json:"tenant"`
	// Namespaces are glob patterns (path.Match) of the namespaces the
	// bundle's objects may be in.
	Namespaces []string `json:"namespaces"`
	// ClusterKinds are the cluster-scoped kinds the bundle may render, as
	// Kind or Kind.group.
	ClusterKinds []string `json:"clusterKinds,omitempty"`
}

// AllowsNamespace reports whether objects may be in the namespace.
func (g *Grant) AllowsNamespace(ns string) bool {
	ok, _, _ := matchGlobs("namespace", ns, g.Namespaces)
	return ok
}

// AllowsClusterKind reports whether cluster-scoped objects of the kind
// (written as schema.GroupKind.String() does: Kind, or Kind.group) may be
// rendered.
func (g *Grant) AllowsClusterKind(groupKind string) bool {
	return slices.Contains(g.ClusterKinds, groupKind)
}

// owner is who owns a bundle under the tenancy policy.
type owner struct {
	platform bool
	tenant   string
}

// readTenancy decodes the tenancy policy, which must be concrete (it
// cannot depend on `cluster`), checks its patterns, and decides every
// bundle's owner. A bundle that belongs to nobody, or to more than one
// owner, fails in every plan (as a schema error does): the fleet's other
// bundles are planned normally.
func (f *Fleet) readTenancy(files []*ast.File, inFolder map[string]string) Diagnostics {
	v := lookup(f.root, fieldTenancy)
	if !v.Exists() {
		return nil
	}
	pos := userPos(v)
	var t Tenancy
	if err := v.Validate(cue.Concrete(true)); err != nil {
		ds := fromCUE(err)
		for _, d := range ds {
			if strings.Contains(d.Message, "field is required but not present") {
				d.Message = "required: write it (`[]` for none), or another file of the fleet could fill it in"
			} else {
				d.Message = "the tenancy policy must be concrete (the same for every cluster; it cannot depend on `cluster`): " + d.Message
			}
			if len(d.Positions) == 0 || d.Positions[0].File == schemaDisplay {
				d.Positions = positionsOf([]token.Pos{pos})
			}
		}
		return ds
	}
	if err := v.Decode(&t); err != nil {
		return fromCUE(err)
	}
	var ds Diagnostics
	checkGlobs := func(at string, patterns []string, pos token.Pos) {
		for _, p := range patterns {
			if _, err := path.Match(p, ""); err != nil {
				ds = append(ds, diagnostic(at, fmt.Sprintf("invalid pattern %q: %v", p, err), pos))
			}
		}
	}
	checkGlobs(fieldTenancy+".platform", t.Platform, userPos(lookup(v, "platform")))
	tenants := lookup(v, "tenants")
	for _, name := range slices.Sorted(maps.Keys(t.Tenants)) {
		tv := lookup(tenants, name)
		at := fieldTenancy + ".tenants." + name
		tn := t.Tenants[name]
		checkGlobs(at+".bundles", tn.Bundles, userPos(lookup(tv, "bundles")))
		checkGlobs(at+".namespaces", tn.Namespaces, userPos(lookup(tv, "namespaces")))
		checkGlobs(at+".files", tn.Files, userPos(lookup(tv, "files")))
		for _, k := range tn.ClusterKinds {
			if k == "" || strings.HasPrefix(k, ".") || strings.ContainsAny(k, "/ ") {
				ds = append(ds, diagnostic(at+".clusterKinds", fmt.Sprintf(
					"%q is not a kind: write Kind for the core group (Namespace) or Kind.group (ClusterRole.rbac.authorization.k8s.io)", k),
					userPos(lookup(tv, "clusterKinds"))))
			}
		}
	}
	if len(ds) > 0 {
		return ds
	}

	f.tenancy = &t
	f.assignOwners(pos)
	return f.checkContributions(files, inFolder, pos)
}

// assignOwners gives every bundle its one owner under the tenancy policy
// (tenancy, positioned at pos): the platform or one tenant. A bundle that
// belongs to no one, or to several, fails in every plan, naming them.
func (f *Fleet) assignOwners(pos token.Pos) {
	t := f.tenancy
	f.owners = map[string]owner{}
	bundles := lookup(f.root, fieldBundles)
	for _, b := range f.bundles {
		var owners []owner
		var names []string
		if ok, _, _ := matchGlobs("bundle", b, t.Platform); ok {
			owners = append(owners, owner{platform: true})
			names = append(names, "the platform (tenancy.platform)")
		}
		for _, name := range slices.Sorted(maps.Keys(t.Tenants)) {
			if ok, _, _ := matchGlobs("bundle", b, t.Tenants[name].Bundles); ok {
				owners = append(owners, owner{tenant: name})
				names = append(names, fmt.Sprintf("tenant %s", name))
			}
		}
		var msg string
		switch len(owners) {
		case 1:
			f.owners[b] = owners[0]
			continue
		case 0:
			msg = "the bundle belongs to no one under the fleet's tenancy policy: list it in tenancy.platform or in one tenant's bundles"
		default:
			msg = fmt.Sprintf("the bundle belongs to %s under the fleet's tenancy policy: it must belong to exactly one", strings.Join(names, " and "))
		}
		f.bundleErrs[b] = append(f.bundleErrs[b], &Diagnostic{
			Bundle: b, Message: msg, Positions: positionsOf([]token.Pos{userPos(lookup(bundles, b)), pos}),
		})
	}
}

// applyTenancy checks a tenant's bundle, evaluated for one cluster, against
// its tenant's namespaces and accounts, and gives it the grant its objects
// are checked against once rendered. Platform bundles, and every bundle of
// a fleet without a policy, are left as they are.
func (f *Fleet) applyTenancy(b *Bundle, v cue.Value) {
	if f.tenancy == nil {
		return
	}
	o := f.owners[b.Name]
	if o.platform {
		return
	}
	t := f.tenancy.Tenants[o.tenant]
	policy := fmt.Sprintf("tenancy.tenants.%s", o.tenant)
	if ok, _, _ := matchGlobs("namespace", b.Namespace, t.Namespaces); !ok {
		b.Errors = append(b.Errors, diagnostic("namespace", fmt.Sprintf(
			"namespace %q is not one of tenant %s's namespaces [%s] (%s.namespaces)",
			b.Namespace, o.tenant, strings.Join(t.Namespaces, ", "), policy), userPos(lookup(v, "namespace"))))
	}
	switch sa := b.Apply.ServiceAccountName; {
	case sa == "":
		b.Errors = append(b.Errors, diagnostic("serviceAccountName", fmt.Sprintf(
			"a bundle of tenant %s must name its serviceAccountName, one of [%s] (%s.serviceAccounts): a tenant's bundle never applies with the agent's identity",
			o.tenant, strings.Join(t.ServiceAccounts, ", "), policy), userPos(v)))
	case !slices.Contains(t.ServiceAccounts, sa):
		b.Errors = append(b.Errors, diagnostic("serviceAccountName", fmt.Sprintf(
			"ServiceAccount %q is not one of tenant %s's accounts [%s] (%s.serviceAccounts)",
			sa, o.tenant, strings.Join(t.ServiceAccounts, ", "), policy), userPos(lookup(v, "serviceAccountName"))))
	}
	b.Tenant = &Grant{Tenant: o.tenant, Namespaces: t.Namespaces, ClusterKinds: t.ClusterKinds}
}

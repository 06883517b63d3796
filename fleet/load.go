package fleet

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing/fstest"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/load"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"

	"github.com/flotilla-gitops/flotilla/schemas"
)

// PackageName is the CUE package a fleet's files belong to.
const PackageName = "fleet"

// schemaFile is the name under which the embedded schema joins the fleet's
// package, and schemaDisplay how its positions are shown.
const (
	schemaFile    = "zz_flotilla_schema.cue"
	schemaDisplay = "flotilla:schemas/fleet.cue"
)

// Top-level fields of a fleet.
const (
	fieldCluster  = "cluster"
	fieldClusters = "clusters"
	fieldBundles  = "bundles"
)

// LoadOptions configure Load.
type LoadOptions struct {
	// Path is the folder of the fleet package inside the repository;
	// defaults to the repository root. It may not leave the repository.
	Path string

	// DisplayDir prefixes file names in positions, so that errors name files
	// the way the user named the repository (for example "examples/basic").
	// Defaults to Path.
	DisplayDir string
}

// Fleet is a loaded and validated fleet repository, ready to be planned for
// any cluster. A Fleet is not safe for concurrent use (CUE values share one
// evaluation context); load one per goroutine to plan in parallel.
type Fleet struct {
	ctx  *cue.Context
	root cue.Value
	// planInst and planRoot are what plans evaluate: the fleet as loaded,
	// or after withoutInventory, the fleet without its inventory.
	planInst *build.Instance
	// display prefixes file names in positions (LoadOptions.DisplayDir).
	display  string
	planRoot cue.Value
	// onePass is how plans of planRoot take one evaluation (onepass.go),
	// read on first use; noOnePass makes every plan take two (for tests).
	onePassOnce sync.Once
	onePass     *onePass
	noOnePass   bool
	// slowDecode decodes every bundle with decodeInputs alone, never the
	// fast path (for the test that compares them).
	slowDecode bool
	// reloadWithoutInventory loads the fleet again without its inventory;
	// nil when something refers to `clusters`, or once done. (The files are
	// read again: a caller planning the inventory must not change the
	// repository meanwhile, as `plan --all` and `vet` do not.)
	reloadWithoutInventory func() (*build.Instance, error)
	// loadWith loads the fleet's files again, parsed by parse; variants
	// are the fleet with bundles left out, for batch plans (prune.go).
	loadWith func(parse func(string, any, parser.Config) (*ast.File, error)) (*build.Instance, error)
	variants *variantCache

	inventory []Cluster
	bundles   []string
	// bundleErrs are problems found inside one bundle whatever the cluster
	// (a misspelt field, a wrong type): that bundle fails in every plan,
	// the others are planned normally.
	bundleErrs map[string]Diagnostics

	// tenancy is the fleet's tenancy policy (nil without one), and owners
	// each bundle's owner under it.
	tenancy *Tenancy
	owners  map[string]owner
	// secrets is the fleet's secrets policy (nil without one).
	secrets *SecretsPolicy
	// policies are the fleet's policies, and policyMemo what matched what
	// (CheckPolicies).
	policies []*Policy
	// policiesDigest is PoliciesDigest.
	policiesDigest string
	policyCount    int // len(policies), which clones share
	policyMemo     map[string]policyMatch
	// invariants are the fleet's invariants (Go values: clones share them).
	invariants []*Invariant

	// schemas gives Helm charts' values schemas when plans check values
	// against them (CheckValues), and compiled keeps them compiled in
	// this Fleet's CUE context (each clone has its own).
	schemas     SchemaSource
	compiled    map[*ChartSchema]compiledSchema
	validValues map[string]bool // schema and values that passed
}

// Load reads the fleet package of the repository at repoDir together with
// the embedded schemas, compiles it once, and checks it. Problems in the
// fleet are returned as Diagnostics (wrapping ErrInvalid) with file:line:col
// positions. Problems confined to one bundle do not fail Load: they fail
// that bundle in every plan.
func Load(repoDir string, opts LoadOptions) (*Fleet, error) {
	pkgDir, err := packageDir(opts.Path)
	if err != nil {
		return nil, err
	}
	display := opts.DisplayDir
	if display == "" {
		display = opts.Path
	}
	inst, err := loadInstance(repoDir, pkgDir, display, nil)
	if err != nil {
		return nil, err
	}
	files := inFleetFolder(inst, pkgDir)

	f := &Fleet{ctx: cuecontext.New(), bundleErrs: map[string]Diagnostics{}, display: display}
	// Build errors show up again, with their paths, in splitValidation, which
	// keeps the ones confined to a bundle for that bundle.
	f.root = f.ctx.BuildInstance(inst)
	var problems Diagnostics
	problems = append(problems, f.checkTopLevel()...)
	problems = append(problems, f.splitValidation()...)
	if err := f.readBundleNames(); err != nil && len(problems) == 0 {
		// (With other problems, bundles cannot be listed because of them.)
		problems = append(problems, AsDiagnostics(err)...)
	}
	if len(problems) == 0 {
		problems = append(problems, f.readInventory()...)
		problems = append(problems, f.readTenancy(inst.Files, files)...)
		problems = append(problems, f.readSecrets()...)
		problems = append(problems, f.readPolicies(inst.Files)...)
		problems = append(problems, f.readInvariants(inst.Files)...)
	}
	if len(problems) > 0 {
		sortDiagnostics(problems)
		return nil, problems
	}
	f.planInst, f.planRoot = inst, f.root
	f.loadWith = func(parse func(string, any, parser.Config) (*ast.File, error)) (*build.Instance, error) {
		return loadInstance(repoDir, pkgDir, display, parse)
	}
	if !refersTo(inst.Files, fieldClusters) {
		f.reloadWithoutInventory = func() (*build.Instance, error) {
			return loadInstance(repoDir, pkgDir, display, dropInventory)
		}
	}
	return f, nil
}

// packageDir turns the fleet path into a folder of the repository's file
// system, refusing absolute paths and `..`.
func packageDir(p string) (string, error) {
	if p == "" {
		p = "."
	}
	if !filepath.IsLocal(p) {
		return "", fmt.Errorf("%w: fleet path %q must be a relative path inside the repository", ErrInvalid, p)
	}
	return filepath.ToSlash(filepath.Clean(p)), nil
}

// loadInstance loads the fleet package through an os.Root file system (so
// nothing outside repoDir can be read) with the schema overlaid, and with no
// CUE registry: evaluation never reaches the network.
func loadInstance(repoDir, pkgDir, display string, parse func(string, any, parser.Config) (*ast.File, error)) (*build.Instance, error) {
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return nil, fmt.Errorf("opening fleet repository: %w", err)
	}
	// The loader reads every file before returning, so the root can close.
	defer root.Close()
	if st, err := root.Stat(pkgDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: fleet path %q is not a folder of %s", ErrInvalid, pkgDir, repoDir)
	}
	schema, err := schemas.FS.ReadFile(schemas.FleetFile)
	if err != nil {
		return nil, err
	}
	overlay := path.Join(pkgDir, schemaFile)
	cfg := &load.Config{
		FS:      overlayFS{base: root.FS(), extra: fstest.MapFS{overlay: {Data: schema}}},
		Dir:     "/" + pkgDir,
		Package: PackageName,
		Env:     []string{"CUE_REGISTRY=none"},
		// parse is nil (the standard parser) or dropInventory.
		ParseFile: parse,
		FromFSPath: func(p string) string {
			p = strings.TrimPrefix(p, "/")
			if p == overlay {
				return schemaDisplay
			}
			// A file of a parent folder (CUE loads those of the package
			// too when the repository has a cue.mod) shows where it is.
			return filepath.Join(display, filepath.FromSlash(fleetFolderPath(pkgDir, p)))
		},
	}
	insts := load.Instances([]string{"."}, cfg)
	if len(insts) != 1 {
		return nil, fmt.Errorf("%w: expected one CUE package %q in %s, found %d", ErrInvalid, PackageName, pkgDir, len(insts))
	}
	inst := insts[0]
	if inst.Err != nil {
		return nil, withUnclosed(fromCUE(inst.Err), func(name string) ([]byte, bool) {
			entries, err := fs.ReadDir(root.FS(), pkgDir)
			if err != nil {
				return nil, false
			}
			for _, e := range entries {
				p := path.Join(pkgDir, e.Name())
				if strings.HasSuffix(e.Name(), ".cue") && cfg.FromFSPath("/"+p) == name {
					data, err := fs.ReadFile(root.FS(), p)
					return data, err == nil
				}
			}
			return nil, false
		})
	}
	if !slices.ContainsFunc(inst.BuildFiles, func(f *build.File) bool { return f.Filename != schemaDisplay }) {
		return nil, fmt.Errorf("%w: no CUE files of package %q in %s (expected fleet.cue)", ErrInvalid, PackageName, filepath.Join(repoDir, pkgDir))
	}
	return inst, nil
}

// checkTopLevel refuses regular top-level fields other than the fleet's
// own, so a misspelt `bundle:` is reported instead of ignored. Hidden fields
// (_x) and definitions (#X) are free for the fleet's helpers.
func (f *Fleet) checkTopLevel() Diagnostics {
	var ds Diagnostics
	iter, err := f.root.Fields()
	if err != nil {
		return fromCUE(err)
	}
	for iter.Next() {
		switch name := iter.Selector().String(); name {
		case fieldCluster, fieldClusters, fieldBundles, fieldTenancy, fieldRollout, fieldSecrets, fieldPolicies, fieldInvariants:
		default:
			ds = append(ds, diagnostic(name, fmt.Sprintf(
				"unknown top-level field; a fleet has %q, %q, %q, %q, %q, %q, %q and %q (use _%s or #%s for helpers)",
				fieldClusters, fieldBundles, fieldRollout, fieldTenancy, fieldSecrets, fieldPolicies, fieldInvariants, fieldCluster, name, name), userPos(iter.Value())))
		}
	}
	return ds
}

// splitValidation checks the fleet against the schemas without requiring
// concreteness (the cluster is not known yet). Problems inside one bundle
// are kept for that bundle; others are returned.
func (f *Fleet) splitValidation() Diagnostics {
	err := f.root.Validate()
	if err == nil {
		return nil
	}
	var global Diagnostics
	for _, d := range fromCUE(err) {
		f.ownPosition(d)
		if name, rest, ok := bundlePath(d.Path); ok {
			d.Bundle, d.Path = name, rest
			f.bundleErrs[name] = append(f.bundleErrs[name], d)
			continue
		}
		global = append(global, d)
	}
	return global
}

// ownPosition puts first, for a problem positioned only in the embedded
// schema (a bundle or cluster name the schema's #Name refuses), where the
// fleet writes the value or, failing that, the nearest field above it:
// that is where the fix goes.
func (f *Fleet) ownPosition(d *Diagnostic) {
	if len(d.Positions) == 0 || slices.ContainsFunc(d.Positions, func(p Position) bool { return p.File != schemaDisplay }) {
		return
	}
	parts := strings.Split(d.Path, ".")
	if len(parts) > 0 && parts[len(parts)-1] == "name" {
		parts = parts[:len(parts)-1] // the name is the field's label
	}
	for ; len(parts) > 0; parts = parts[:len(parts)-1] {
		if pos := userPos(lookupPath(f.root, parts)); pos.IsValid() && pos.Filename() != schemaDisplay {
			d.Positions = positionsOf([]token.Pos{pos})
			return
		}
	}
}

// bundlePath splits "bundles.web.values.x" into "web" and "values.x".
func bundlePath(p string) (name, rest string, ok bool) {
	after, found := strings.CutPrefix(p, fieldBundles+".")
	if !found {
		return "", "", false
	}
	name, rest, _ = strings.Cut(after, ".")
	return name, rest, true
}

// readBundleNames lists the bundles in name order.
func (f *Fleet) readBundleNames() error {
	iter, err := lookup(f.root, fieldBundles).Fields()
	if err != nil {
		return fromCUE(err)
	}
	for iter.Next() {
		f.bundles = append(f.bundles, iter.Selector().Unquoted())
	}
	slices.Sort(f.bundles)
	return nil
}

// readInventory decodes `clusters`, which must be concrete: it cannot depend
// on `cluster`.
func (f *Fleet) readInventory() Diagnostics {
	v := lookup(f.root, fieldClusters)
	if !v.Exists() {
		return nil
	}
	var inv map[string]Cluster
	if err := v.Decode(&inv); err != nil {
		return fromCUE(err)
	}
	var ds Diagnostics
	for _, name := range slices.Sorted(maps.Keys(inv)) {
		c := inv[name].Normalized()
		if err := c.Validate(); err != nil {
			pos := userPos(lookup(v, name))
			ds = append(ds, diagnostic(fieldClusters+"."+name, err.Error(), pos))
			continue
		}
		f.inventory = append(f.inventory, c)
	}
	return ds
}

// Inventory returns the clusters listed in the fleet's `clusters`, in name
// order.
func (f *Fleet) Inventory() []Cluster { return slices.Clone(f.inventory) }

// InventoryCluster returns the inventory entry with the given name.
func (f *Fleet) InventoryCluster(name string) (Cluster, error) {
	for _, c := range f.inventory {
		if c.Name == name {
			return c, nil
		}
	}
	names := make([]string, len(f.inventory))
	for i, c := range f.inventory {
		names[i] = c.Name
	}
	if len(names) == 0 {
		return Cluster{}, fmt.Errorf("cluster %q: the fleet has no `clusters` inventory; give the identity with --name, --region and --label", name)
	}
	return Cluster{}, fmt.Errorf("cluster %q is not in the fleet's inventory (%s)", name, strings.Join(names, ", "))
}

// Bundles returns the names of the fleet's bundles in name order.
func (f *Fleet) Bundles() []string { return slices.Clone(f.bundles) }

// lookup returns the field of v with the given name (a plain label, not a
// CUE path: no parsing on the hot path).
func lookup(v cue.Value, name string) cue.Value {
	return v.LookupPath(cue.MakePath(cue.Str(name)))
}

// withoutInventory makes plans evaluate the fleet without its inventory,
// which pays off when planning many clusters: filling `cluster` re-evaluates
// every field of the root, and re-evaluating a 1,000-cluster inventory for
// each of 1,000 plans made planning the inventory quadratic. It costs a
// second load, so a single plan (an agent's) does not do it.
func (f *Fleet) withoutInventory() error {
	if f.variants == nil && f.loadWith != nil {
		// Batch plans also leave out the bundles a cluster does not get.
		f.variants = &variantCache{load: f.loadWith, insts: map[string]*build.Instance{}, errs: map[string]error{},
			dropInventory: f.reloadWithoutInventory != nil}
		f.onePassOnce, f.onePass = sync.Once{}, nil
	}
	if f.reloadWithoutInventory == nil {
		return nil
	}
	inst, err := f.reloadWithoutInventory()
	if err != nil {
		return err
	}
	f.planInst, f.planRoot = inst, f.ctx.BuildInstance(inst)
	f.onePassOnce, f.onePass = sync.Once{}, nil
	f.reloadWithoutInventory = nil // done
	return nil
}

// clone returns a Fleet that evaluates in a CUE context of its own, so
// another goroutine can plan with it. The files are not read again;
// everything else is shared read-only.
func (f *Fleet) clone() *Fleet {
	ctx := cuecontext.New()
	root := ctx.BuildInstance(f.planInst)
	return &Fleet{
		ctx:      ctx,
		root:     root,
		planInst: f.planInst,
		planRoot: root,
		// reloadWithoutInventory stays nil: the clone compiles planInst.
		inventory:  f.inventory,
		bundles:    f.bundles,
		bundleErrs: f.bundleErrs,
		tenancy:    f.tenancy,
		secrets:    f.secrets,
		owners:     f.owners,
		noOnePass:  f.noOnePass,
		slowDecode: f.slowDecode,
		variants:   f.variants,
		schemas:    f.schemas,
		// The clone plans; the policies (CUE values of this context) are
		// checked by the Fleet that read them.
		policyCount: f.policyCount,
		invariants:  f.invariants,
	}
}

// fleetFolderPath is the path of the repository file p (slash-separated,
// from the repository root) from the fleet's folder pkgDir: "x.cue" for
// one in it, "../x.cue" for one of a parent folder.
func fleetFolderPath(pkgDir, p string) string {
	if pkgDir == "." {
		return p
	}
	rel, err := filepath.Rel(filepath.FromSlash(pkgDir), filepath.FromSlash(p))
	if err != nil {
		return p
	}
	return filepath.ToSlash(rel)
}

// inFleetFolder maps the instance's files, by the name positions show, to
// their paths from the fleet's folder (fleetFolderPath): what tenants'
// files patterns match, however the fleet's path was spelt.
func inFleetFolder(inst *build.Instance, pkgDir string) map[string]string {
	out := map[string]string{}
	for _, bf := range inst.BuildFiles {
		if bf.Filename == schemaDisplay {
			continue
		}
		out[bf.Filename] = fleetFolderPath(pkgDir, repoPathOf(bf))
	}
	return out
}

// repoPathOf is a loaded file's path from the repository root.
func repoPathOf(bf *build.File) string {
	return strings.TrimPrefix(bf.FilenameLoc.Path, "/")
}

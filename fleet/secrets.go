package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"
)

const fieldSecrets = "secrets"

// SecretsPolicy is the fleet's `secrets`: which cluster class may read
// which SOPS-encrypted files.
type SecretsPolicy struct {
	// By is the cluster label whose value is a cluster's class.
	By string `json:"by"`
	// Recipients are the age recipients of each class.
	Recipients map[string][]string `json:"recipients"`

	pos        token.Pos
	classesPos map[string]token.Pos
}

// Secrets returns the fleet's secrets policy, nil without one.
func (f *Fleet) Secrets() *SecretsPolicy { return f.secrets }

// readSecrets reads the policy: concrete, as tenancy.
func (f *Fleet) readSecrets() Diagnostics {
	v := lookup(f.root, fieldSecrets)
	if !v.Exists() {
		return nil
	}
	if err := v.Validate(cue.Concrete(true)); err != nil {
		ds := fromCUE(err)
		for _, d := range ds {
			d.Message = "the secrets policy must be concrete (the same for every cluster): " + d.Message
			if len(d.Positions) == 0 {
				d.Positions = positionsOf([]token.Pos{userPos(v)})
			}
		}
		return ds
	}
	p := &SecretsPolicy{pos: userPos(v), classesPos: map[string]token.Pos{}}
	if err := v.Decode(p); err != nil {
		return fromCUE(err)
	}
	recipients := lookup(v, "recipients")
	for class := range p.Recipients {
		p.classesPos[class] = userPos(lookup(recipients, class))
	}
	f.secrets = p
	return nil
}

// EncryptedFile is a SOPS-encrypted file a bundle reads, and the
// recipients it is encrypted to.
type EncryptedFile struct {
	Path       string
	Recipients []string
}

// CheckSecrets checks, for each plan's bundles, the encrypted files each
// would give its cluster (files lists them for a bundle) against the
// policy: every one must be encrypted to all the recipients of the
// cluster's class, and to no recipient of another class that the
// cluster's class does not share. A cluster with no class, or a class the
// policy does not list, may receive no encrypted file. Problems name the
// cluster, the bundle, the file and the recipients, positioned at the
// policy's entry for the class.
func (p *SecretsPolicy) CheckSecrets(plans []*Plan, files func(*Bundle) ([]EncryptedFile, error)) Diagnostics {
	var ds Diagnostics
	for _, plan := range plans {
		class, labelled := plan.Cluster.Labels[p.By]
		own, known := p.Recipients[class]
		for _, b := range plan.Bundles {
			if b.Failed() {
				continue
			}
			efs, err := files(b)
			if err != nil {
				ds = append(ds, &Diagnostic{Clusters: []string{plan.Cluster.Name}, Bundle: b.Name, Path: fieldSecrets,
					Message: "reading the bundle's encrypted files: " + err.Error(), Positions: positionsOf([]token.Pos{p.pos})})
				continue
			}
			for _, ef := range efs {
				var msg string
				pos := p.pos
				switch {
				case !labelled:
					msg = fmt.Sprintf("%s is SOPS-encrypted, and the cluster has no %s label: the secrets policy gives it no recipients, so it may receive no encrypted file", ef.Path, p.By)
				case !known:
					msg = fmt.Sprintf("%s is SOPS-encrypted, and the cluster's class %s=%s has no recipients in the secrets policy", ef.Path, p.By, class)
				default:
					pos = p.classesPos[class]
					msg = p.recipientProblem(ef, class, own)
				}
				if msg != "" {
					ds = append(ds, &Diagnostic{Clusters: []string{plan.Cluster.Name}, Bundle: b.Name, Path: fieldSecrets,
						Message: msg, Positions: positionsOf([]token.Pos{pos})})
				}
			}
		}
	}
	return mergeByCluster(ds)
}

// recipientProblem says what is wrong with a file for a class, or "".
func (p *SecretsPolicy) recipientProblem(ef EncryptedFile, class string, own []string) string {
	var missing, foreign, unknown []string
	for _, r := range own {
		if !slices.Contains(ef.Recipients, r) {
			missing = append(missing, r)
		}
	}
	for _, r := range ef.Recipients {
		if slices.Contains(own, r) {
			continue
		}
		found := false
		for _, other := range slices.Sorted(maps.Keys(p.Recipients)) {
			if other != class && slices.Contains(p.Recipients[other], r) {
				foreign = append(foreign, fmt.Sprintf("%s (class %s)", r, other))
				found = true
				break
			}
		}
		if !found {
			// A key of no class: whoever holds it reads the secret, and the
			// policy cannot say who that is.
			unknown = append(unknown, r)
		}
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("is not encrypted to %s of class %s", strings.Join(missing, ", "), class))
	}
	if len(foreign) > 0 {
		parts = append(parts, fmt.Sprintf("is encrypted to %s, which class %s must not share", strings.Join(foreign, ", "), class))
	}
	if len(unknown) > 0 {
		parts = append(parts, fmt.Sprintf("is encrypted to %s, of no class of the secrets policy", strings.Join(unknown, ", ")))
	}
	if len(parts) == 0 {
		return ""
	}
	return ef.Path + " " + strings.Join(parts, ", and ")
}

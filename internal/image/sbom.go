package image

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// SBOMMediaType is the CycloneDX JSON media type: the referrer's
// artifactType and its one layer's media type.
const SBOMMediaType = "application/vnd.cyclonedx+json"

// SBOM describes a Go binary from its embedded build information (what `go
// version -m` prints): the main module and every module linked into it,
// with versions, go.sum hashes and package URLs, and the build settings.
// It is CycloneDX 1.6 JSON, written with the CycloneDX Go library, and
// reproducible: its serial number derives from its content and its time is
// m.Created.
func SBOM(binary string, m Metadata) ([]byte, error) {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("reading the build information of %s: %w", binary, err)
	}
	main := cdx.Component{
		BOMRef:     purl(bi.Main.Path, m.Version),
		Type:       cdx.ComponentTypeApplication,
		Name:       bi.Main.Path,
		Version:    m.Version,
		PackageURL: purl(bi.Main.Path, m.Version),
	}
	props := []cdx.Property{{Name: "go:version", Value: bi.GoVersion}, {Name: "vcs:revision", Value: m.Revision}}
	for _, s := range bi.Settings {
		props = append(props, cdx.Property{Name: "go:build:" + s.Key, Value: s.Value})
	}
	main.Properties = &props

	var comps []cdx.Component
	var refs []string
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		c := cdx.Component{
			BOMRef:     purl(d.Path, d.Version),
			Type:       cdx.ComponentTypeLibrary,
			Name:       d.Path,
			Version:    d.Version,
			PackageURL: purl(d.Path, d.Version),
			Scope:      cdx.ScopeRequired,
		}
		if d.Sum != "" {
			c.Properties = &[]cdx.Property{{Name: "go:sum", Value: d.Sum}}
		}
		comps = append(comps, c)
		refs = append(refs, c.BOMRef)
	}
	sort.Slice(comps, func(i, j int) bool { return comps[i].BOMRef < comps[j].BOMRef })
	sort.Strings(refs)

	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{
		Timestamp: m.Created.UTC().Format("2006-01-02T15:04:05Z"),
		Component: &main,
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{
			Type: cdx.ComponentTypeApplication, Name: "flotilla internal/image", Version: m.Version,
		}}},
	}
	bom.Components = &comps
	bom.Dependencies = &[]cdx.Dependency{{Ref: main.BOMRef, Dependencies: &refs}}

	encode := func() ([]byte, error) {
		var buf bytes.Buffer
		enc := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON)
		enc.SetPretty(true)
		if err := enc.EncodeVersion(bom, cdx.SpecVersion1_6); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	// The serial number is a UUID derived from everything else, so two
	// builds of one commit give one SBOM (and one digest).
	body, err := encode()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	sum[6] = sum[6]&0x0f | 0x50 // a name-based UUID (version 5 layout)
	sum[8] = sum[8]&0x3f | 0x80
	bom.SerialNumber = fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	return encode()
}

// purl is a Go module's package URL (purl-spec's golang type).
func purl(path, version string) string {
	p := "pkg:golang/" + strings.ToLower(path)
	if version != "" {
		p += "@" + version
	}
	return p
}

// Referrer is an OCI 1.1 artifact manifest pointing at subject: the empty
// configuration, one layer holding data, and artifactType. Registries with
// the referrers API list it under the subject's digest; go-containerregistry
// falls back to the referrers tag scheme on those without.
func Referrer(subject v1.Descriptor, artifactType string, data []byte, annotations map[string]string) (v1.Image, error) {
	r := &referrer{data: data, mt: types.MediaType(artifactType)}
	empty := []byte("{}")
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifactType,
		Config: v1.Descriptor{
			MediaType: "application/vnd.oci.empty.v1+json",
			Size:      int64(len(empty)),
			Digest:    digest(empty),
		},
		Layers: []v1.Descriptor{{
			MediaType:   types.MediaType(artifactType),
			Size:        int64(len(data)),
			Digest:      digest(data),
			Annotations: map[string]string{"org.opencontainers.image.title": "sbom.cdx.json"},
		}},
		Subject:     &subject,
		Annotations: annotations,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	r.manifest, r.config = raw, empty
	return partial.CompressedToImage(r)
}

func digest(b []byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(b))}
}

// referrer implements partial.CompressedImageCore for Referrer.
type referrer struct {
	manifest, config, data []byte
	mt                     types.MediaType
}

func (r *referrer) RawConfigFile() ([]byte, error)      { return r.config, nil }
func (r *referrer) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (r *referrer) RawManifest() ([]byte, error)        { return r.manifest, nil }

func (r *referrer) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	switch h {
	case digest(r.data):
		return blob{data: r.data, mt: r.mt}, nil
	case digest(r.config):
		return blob{data: r.config, mt: "application/vnd.oci.empty.v1+json"}, nil
	}
	return nil, fmt.Errorf("blob %s is not in this artifact", h)
}

type blob struct {
	data []byte
	mt   types.MediaType
}

func (b blob) Digest() (v1.Hash, error)            { return digest(b.data), nil }
func (b blob) Size() (int64, error)                { return int64(len(b.data)), nil }
func (b blob) MediaType() (types.MediaType, error) { return b.mt, nil }
func (b blob) Compressed() (io.ReadCloser, error)  { return io.NopCloser(bytes.NewReader(b.data)), nil }

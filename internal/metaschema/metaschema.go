// Package metaschema names the JSON Schema meta-schemas a chart's
// values.schema.json may declare in `$schema`, in every spelling people
// write them: http or https, with or without the empty fragment "#".
// Helm's validator (santhosh-tekuri/jsonschema) knows these without
// loading anything; CUE's JSON Schema decoder knows them only in their
// canonical spelling. Rendering allows exactly these (any other `$schema`
// would be loaded from the network or the host), and vet hands CUE the
// canonical form, so that what `helm template` accepts offline vet checks.
// A leaf: standard library only.
package metaschema

import "strings"

// canonical maps a meta-schema's host and path to its identifier as the
// JSON Schema specification (and CUE) writes it. "json-schema.org/schema"
// is the latest draft, which Helm's validator takes as 2020-12.
var canonical = map[string]string{
	"json-schema.org/draft-04/schema":      "http://json-schema.org/draft-04/schema#",
	"json-schema.org/draft-06/schema":      "http://json-schema.org/draft-06/schema#",
	"json-schema.org/draft-07/schema":      "http://json-schema.org/draft-07/schema#",
	"json-schema.org/draft/2019-09/schema": "https://json-schema.org/draft/2019-09/schema",
	"json-schema.org/draft/2020-12/schema": "https://json-schema.org/draft/2020-12/schema",
	"json-schema.org/schema":               "https://json-schema.org/draft/2020-12/schema",
}

// Canonical returns the canonical identifier of the meta-schema url names,
// and whether it is one of the standard meta-schemas.
func Canonical(url string) (string, bool) {
	rest, ok := strings.CutPrefix(url, "https://")
	if !ok {
		rest, ok = strings.CutPrefix(url, "http://")
	}
	if !ok {
		return "", false
	}
	c, ok := canonical[strings.TrimSuffix(rest, "#")]
	return c, ok
}

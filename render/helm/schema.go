package helm

import (
	"encoding/json"
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/chart"

	"github.com/flotilla-gitops/flotilla/internal/metaschema"
)

// checkSchemas refuses a values.schema.json, of the chart or any subchart,
// that refers outside itself. Helm's validator resolves such references
// with loaders for file:// (the base is file:///values.schema.json, so
// "../../etc/passwd" is a host file) and http(s)://: rendering would read
// host files or reach the network. References inside the schema ("#/…")
// and the standard meta-schemas stay allowed.
func checkSchemas(c *chart.Chart) error {
	if len(c.Schema) > 0 {
		var doc any
		if err := json.Unmarshal(c.Schema, &doc); err != nil {
			return fmt.Errorf("chart %s: values.schema.json: %w", c.Name(), err)
		}
		if err := checkSchemaRefs(doc); err != nil {
			return fmt.Errorf("chart %s: values.schema.json %w: references outside the schema are not resolved (no file or network access while rendering)", c.Name(), err)
		}
	}
	for _, dep := range c.Dependencies() {
		if err := checkSchemas(dep); err != nil {
			return err
		}
	}
	return nil
}

// checkSchemaRefs walks a schema document for references that leave it.
func checkSchemaRefs(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			s, isString := child.(string)
			switch {
			case isString && (k == "$ref" || k == "$dynamicRef" || k == "$recursiveRef") && !strings.HasPrefix(s, "#"):
				return fmt.Errorf("refers to %q", s)
			case isString && k == "$schema" && !isMetaSchema(s):
				return fmt.Errorf("names the meta-schema %q", s)
			}
			if err := checkSchemaRefs(child); err != nil {
				return err
			}
		}
	case []any:
		for _, child := range v {
			if err := checkSchemaRefs(child); err != nil {
				return err
			}
		}
	}
	return nil
}

// isMetaSchema reports whether a $schema names a standard meta-schema
// (the validator Helm uses knows them without loading them; any other
// would be loaded, from the network or the host's files).
func isMetaSchema(url string) bool {
	_, ok := metaschema.Canonical(url)
	return ok
}

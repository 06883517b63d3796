package metaschema

import "testing"

func TestCanonical(t *testing.T) {
	for url, want := range map[string]string{
		"http://json-schema.org/draft-07/schema#":       "http://json-schema.org/draft-07/schema#",
		"https://json-schema.org/draft-07/schema#":      "http://json-schema.org/draft-07/schema#",
		"https://json-schema.org/draft-07/schema":       "http://json-schema.org/draft-07/schema#",
		"http://json-schema.org/draft-04/schema":        "http://json-schema.org/draft-04/schema#",
		"https://json-schema.org/draft-06/schema#":      "http://json-schema.org/draft-06/schema#",
		"http://json-schema.org/draft/2019-09/schema#":  "https://json-schema.org/draft/2019-09/schema",
		"https://json-schema.org/draft/2020-12/schema#": "https://json-schema.org/draft/2020-12/schema",
		"http://json-schema.org/schema#":                "https://json-schema.org/draft/2020-12/schema",
		"https://json-schema.org/schema":                "https://json-schema.org/draft/2020-12/schema",
	} {
		if got, ok := Canonical(url); !ok || got != want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", url, got, ok, want)
		}
	}
	for _, url := range []string{
		"", "json-schema.org/draft-07/schema#", "http://json-schema.org/draft-05/schema#",
		"http://127.0.0.1/meta.json", "file:///etc/passwd", "http://json-schema.org/draft-07/schema#/definitions",
		"http://evil.example/json-schema.org/draft-07/schema",
	} {
		if got, ok := Canonical(url); ok {
			t.Errorf("Canonical(%q) = %q, true; want not a meta-schema", url, got)
		}
	}
}

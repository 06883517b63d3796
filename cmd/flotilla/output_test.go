package main

import (
	"bytes"
	"testing"
)

// TestListPrintsWhatWritePrints: a list printed element by element (batch
// commands that keep nothing) is, byte for byte, the whole list printed at
// once, in JSON and YAML, for no element, one and several, with values
// JSON escapes.
func TestListPrintsWhatWritePrints(t *testing.T) {
	type item struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
		Values []int             `json:"values"`
		Note   string            `json:"note,omitempty"`
	}
	all := []item{
		{Name: "a", Labels: map[string]string{"env": "prod", "x": "<&>"}, Values: []int{1, 2}},
		{Name: "b", Values: nil, Note: "multi\nline: value"},
		{Name: "c", Values: []int{}, Note: "- not a list"},
	}
	for _, format := range []string{"json", "yaml"} {
		for _, n := range []int{0, 1, 3} {
			o := &outputFlag{format: format}
			var whole, streamed bytes.Buffer
			if err := o.write(&whole, all[:n], nil); err != nil {
				t.Fatal(err)
			}
			l := o.list(&streamed)
			for _, it := range all[:n] {
				if err := l.add(it); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.close(); err != nil {
				t.Fatal(err)
			}
			if whole.String() != streamed.String() {
				t.Errorf("%s, %d elements: element by element\n%s\nwhole\n%s", format, n, streamed.String(), whole.String())
			}
		}
	}
}

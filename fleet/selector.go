package fleet

import (
	"fmt"
	"path"
	"strings"

	"cuelang.org/go/cue"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// selector is the Go form of #Selector. Every condition that is set must
// hold; an empty selector matches every cluster.
type selector struct {
	ClusterSelector *metav1.LabelSelector `json:"clusterSelector,omitempty"`
	Regions         *[]string             `json:"regions,omitempty"`
	Names           *[]string             `json:"names,omitempty"`
	When            *bool                 `json:"when,omitempty"`
}

// Selector fields, as they appear in #Selector (and so in #Overlay).
var selectorFields = []string{"clusterSelector", "regions", "names", "when"}

// decodeSelector reads the selector fields of v (a target or an overlay,
// which also holds other fields); at is v's path in the bundle, for errors.
func decodeSelector(v cue.Value, at string) (selector, error) {
	var s selector
	for _, field := range selectorFields {
		fv := lookup(v, field)
		if !fv.Exists() {
			continue
		}
		var err error
		switch field {
		case "clusterSelector":
			s.ClusterSelector = &metav1.LabelSelector{}
			err = fv.Decode(s.ClusterSelector)
		case "regions":
			s.Regions = new([]string)
			err = fv.Decode(s.Regions)
		case "names":
			s.Names = new([]string)
			err = fv.Decode(s.Names)
		case "when":
			s.When = new(bool)
			err = fv.Decode(s.When)
		}
		if err != nil {
			return s, selectorError(at+"."+field, fv, err)
		}
	}
	return s, nil
}

// selectorError explains a selector field that cannot be read for this
// cluster, at the fleet's position. A `when` that is not concrete usually
// reads a label or fact the cluster does not have.
func selectorError(path string, v cue.Value, err error) *Diagnostic {
	msg := err.Error()
	if ds := fromCUE(err); len(ds) > 0 {
		msg = ds[0].Message
	}
	if !v.IsConcrete() {
		msg += "; if it reads a label the cluster may not have, give a default: (*cluster.labels.team | \"\") == \"x\""
	}
	return diagnostic(path, msg, userPos(v))
}

// match reports whether the selector chooses the cluster, and why, one
// reason per condition (for `flotilla plan`). An invalid selector (a bad
// label selector or glob) is an error.
func (s selector) match(c Cluster) (bool, []string, error) {
	ok := true
	var why []string
	add := func(matched bool, reason string) {
		ok = ok && matched
		why = append(why, reason)
	}
	if s.ClusterSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(s.ClusterSelector)
		if err != nil {
			return false, nil, fmt.Errorf("clusterSelector: %w", err)
		}
		text := sel.String()
		if text == "" {
			text = "(empty: every cluster)"
		}
		matched := sel.Matches(labels.Set(c.Labels))
		add(matched, fmt.Sprintf("clusterSelector %s %s labels {%s}", text, verb(matched, "matches", "does not match"), LabelString(c.Labels)))
	}
	if s.Regions != nil {
		matched, reason, err := matchGlobs("region", c.Region, *s.Regions)
		if err != nil {
			return false, nil, err
		}
		add(matched, reason)
	}
	if s.Names != nil {
		matched, reason, err := matchGlobs("name", c.Name, *s.Names)
		if err != nil {
			return false, nil, err
		}
		add(matched, reason)
	}
	if s.When != nil {
		add(*s.When, fmt.Sprintf("when is %t", *s.When))
	}
	if len(why) == 0 {
		why = append(why, "no selector: every cluster")
	}
	return ok, why, nil
}

// matchGlobs matches value against path.Match patterns; an empty list
// matches nothing.
func matchGlobs(what, value string, patterns []string) (bool, string, error) {
	for _, p := range patterns {
		ok, err := path.Match(p, value)
		if err != nil {
			return false, "", fmt.Errorf("%ss: invalid pattern %q: %w", what, p, err)
		}
		if ok {
			return true, fmt.Sprintf("%s %q matches %q", what, value, p), nil
		}
	}
	return false, fmt.Sprintf("%s %q matches none of [%s]", what, value, strings.Join(patterns, ", ")), nil
}

func verb(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

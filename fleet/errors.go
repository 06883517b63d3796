package fleet

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
)

// ErrInvalid is wrapped by every error that describes a problem in the fleet
// repository itself (as opposed to, say, an unreadable folder). Callers test
// for it with errors.Is.
var ErrInvalid = errors.New("invalid fleet")

// Position is a place in a fleet file.
type Position struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
}

func (p Position) String() string {
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Diagnostic is one problem found while loading or evaluating a fleet, with
// the source positions it came from (both sides of a conflict, for example)
// and the cluster and bundle it concerns.
type Diagnostic struct {
	// Clusters are the clusters for which the problem occurs (none when it
	// does not depend on the cluster).
	Clusters  []string   `json:"clusters,omitempty"`
	Bundle    string     `json:"bundle,omitempty"`
	Path      string     `json:"path,omitempty"`
	Message   string     `json:"message"`
	Positions []Position `json:"positions,omitempty"`
}

// Error formats the diagnostic as `file:line:col: cluster c: bundle b:
// path: message (also file:line:col)`, the form editors and CI logs link.
func (d *Diagnostic) Error() string { return d.format("") }

// Warning formats the diagnostic as Error does, as a warning:
// `file:line:col: warning: bundle b: path: message`.
func (d *Diagnostic) Warning() string { return d.format("warning: ") }

func (d *Diagnostic) format(severity string) string {
	var b strings.Builder
	if len(d.Positions) > 0 {
		b.WriteString(d.Positions[0].String() + ": ")
	}
	b.WriteString(severity)
	switch len(d.Clusters) {
	case 0:
	case 1:
		b.WriteString("cluster " + d.Clusters[0] + ": ")
	default:
		b.WriteString("clusters " + strings.Join(d.Clusters, ", ") + ": ")
	}
	if d.Bundle != "" {
		b.WriteString("bundle " + d.Bundle + ": ")
	}
	if d.Path != "" {
		b.WriteString(d.Path + ": ")
	}
	b.WriteString(errtext.Clean(d.Message))
	if len(d.Positions) > 1 {
		others := make([]string, 0, len(d.Positions)-1)
		for _, p := range d.Positions[1:] {
			others = append(others, p.String())
		}
		b.WriteString(" (and " + strings.Join(others, ", ") + ")")
	}
	return b.String()
}

func (d *Diagnostic) Unwrap() error { return ErrInvalid }

// Diagnostics is a list of problems; as an error it prints one per line,
// the first maxPrinted of them (a comprehension of 1,500 objects with one
// mistake makes 1,500 diagnostics: the list itself, with -o json, has
// them all).
type Diagnostics []*Diagnostic

// maxPrinted bounds how many diagnostics an error message shows.
const maxPrinted = 10

func (ds Diagnostics) Error() string {
	lines := make([]string, 0, min(len(ds), maxPrinted+1))
	for i, d := range ds {
		if i == maxPrinted {
			lines = append(lines, fmt.Sprintf("… and %d more %s", len(ds)-maxPrinted, english.Noun(len(ds)-maxPrinted, "problem")))
			break
		}
		lines = append(lines, d.Error())
	}
	return strings.Join(lines, "\n")
}

func (ds Diagnostics) Unwrap() error { return ErrInvalid }

// AsDiagnostics extracts the diagnostics from an error returned by this
// package.
func AsDiagnostics(err error) Diagnostics {
	var ds Diagnostics
	if errors.As(err, &ds) {
		return ds
	}
	var d *Diagnostic
	if errors.As(err, &d) {
		return Diagnostics{d}
	}
	return nil
}

// positionsOf converts CUE positions, skipping unknown ones and
// duplicates; more adds positions already converted.
func positionsOf(ps []token.Pos, more ...Position) []Position {
	out := make([]Position, 0, len(ps)+len(more))
	for _, p := range ps {
		if p.IsValid() {
			more = append(more, Position{File: p.Filename(), Line: p.Line(), Column: p.Column()})
		}
	}
	for _, pos := range more {
		if !slices.Contains(out, pos) {
			out = append(out, pos)
		}
	}
	return out
}

// fromCUE turns a CUE error into diagnostics, one per path.
//
// CUE reports a value that fits no alternative of a disjunction as a
// summary without positions ("N errors in empty disjunction") followed by
// one error per alternative; those become one diagnostic listing the
// alternatives. Otherwise the first error of a path is the one that names
// the user's values (a conflict with both positions) and the rest, which
// explain defaults that were discarded, are dropped.
//
// Positions in the embedded schema are dropped when the fleet's own files
// are also named: a user cannot edit the schema, and the fleet position is
// where the fix goes.
func fromCUE(err error) Diagnostics {
	var order []string
	groups := map[string][]cueerrors.Error{}
	for _, e := range cueerrors.Errors(err) {
		path := strings.Join(e.Path(), ".")
		key := path
		if path == "" {
			// Errors of no path (syntax errors, in several files) are
			// each their own.
			key = fmt.Sprint(cueerrors.Positions(e))
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], e)
	}
	var ds Diagnostics
	for _, key := range order {
		errs := groups[key]
		first := errs[0]
		d := &Diagnostic{Path: strings.Join(first.Path(), "."), Message: message(first), Positions: positionsOf(cueerrors.Positions(first))}
		if len(d.Positions) == 0 && len(errs) > 1 {
			alternatives := make([]string, 0, len(errs)-1)
			for _, e := range errs[1:] {
				if msg := message(e); !slices.Contains(alternatives, msg) {
					alternatives = append(alternatives, msg)
				}
				d.Positions = append(d.Positions, positionsOf(cueerrors.Positions(e))...)
			}
			d.Message = alternativesMessage(alternatives)
			d.Positions = positionsOf(nil, d.Positions...)
		}
		d.Positions = dropSchemaPositions(d.Positions)
		ds = append(ds, d)
	}
	ds = withoutNoise(ds)
	sortDiagnostics(ds)
	return ds
}

// noAlternative starts the message of a value that fits no alternative of
// a disjunction.
const noAlternative = "no allowed alternative accepts the value: "

// alternativesMessage explains why a value fits no alternative: the
// alternatives' reasons, without those that only say a default was not
// taken (`*"default" | #Name` given "Web_NS": "conflicting values
// "default" and "Web_NS"") when another says more.
func alternativesMessage(alternatives []string) string {
	informative := slices.DeleteFunc(slices.Clone(alternatives), literalConflict.MatchString)
	if len(informative) > 0 {
		alternatives = informative
	} else if oneOf := notOneOf(alternatives); oneOf != "" {
		return oneOf
	}
	if len(alternatives) == 1 {
		return alternatives[0]
	}
	return noAlternative + strings.Join(alternatives, "; ")
}

// notOneOf says, when every alternative is a literal the value is not
// (operator: "in" for "In" | "NotIn" | …), that the value is not one of
// them; "" otherwise.
func notOneOf(alternatives []string) string {
	var allowed []string
	value := ""
	for _, alt := range alternatives {
		m := literalConflict.FindStringSubmatch(alt)
		if m == nil || value != "" && m[2] != value {
			return ""
		}
		value = m[2]
		allowed = append(allowed, m[1])
	}
	if len(allowed) < 2 {
		return ""
	}
	return fmt.Sprintf("%s is not one of %s", value, strings.Join(allowed, ", "))
}

// literalConflict is a conflict between two literals.
var literalConflict = regexp.MustCompile(`^conflicting values ("[^"]*"|-?[0-9.]+|true|false) and ("[^"]*"|-?[0-9.]+|true|false)$`)

// withoutNoise leaves out what CUE reports about a value besides the
// mistake in it. When a list-form overlay has an error, CUE also says the
// list is not the struct form (`conflicting values […] and {…}
// (mismatched types list and struct)`), and that each element is not
// allowed in the empty list of the default (`overlays.0: field not
// allowed`); a person reads the one error inside. So: a disjunction's
// account or a list/struct mismatch at a path with a problem under it, an
// element "not allowed" beside a problem inside the same list, and an
// account that only lists kind mismatches when another problem is
// reported, are dropped.
func withoutNoise(ds Diagnostics) Diagnostics {
	if len(ds) < 2 {
		return ds
	}
	hasUnder := func(d *Diagnostic, skip func(*Diagnostic) bool) bool {
		return slices.ContainsFunc(ds, func(o *Diagnostic) bool { return o != d && !skip(o) && pathUnder(d.Path, o.Path) })
	}
	none := func(*Diagnostic) bool { return false }
	var out Diagnostics
	for _, d := range ds {
		switch {
		case (strings.HasPrefix(d.Message, noAlternative) || kindMismatch(d.Message)) && hasUnder(d, none):
		case onlyListStruct(d.Message) && slices.ContainsFunc(ds, func(o *Diagnostic) bool { return o != d && sameBundle(o.Path, d.Path) }):
		case d.Message == "field not allowed" && elementPath.MatchString(d.Path) &&
			hasUnder(&Diagnostic{Path: elementPath.ReplaceAllString(d.Path, "")}, elementNotAllowed):
		default:
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return ds
	}
	return out
}

// pathUnder reports whether the dotted path inner is strictly inside
// outer ("" is the root).
func pathUnder(outer, inner string) bool {
	return outer != inner && (outer == "" || strings.HasPrefix(inner, outer+"."))
}

// elementPath is the path of a list element: its index is the last part.
var elementPath = regexp.MustCompile(`\.[0-9]+$`)

func elementNotAllowed(d *Diagnostic) bool {
	return d.Message == "field not allowed" && elementPath.MatchString(d.Path)
}

func kindMismatch(msg string) bool { return strings.Contains(msg, "(mismatched types ") }

// onlyListStruct reports whether a message says only that a list is not
// a struct or a struct not a list, in every alternative: the value is of
// the kind one alternative wants, and its mistake is reported on its own.
func onlyListStruct(msg string) bool {
	for _, alt := range strings.Split(strings.TrimPrefix(msg, noAlternative), "; ") {
		if !strings.HasSuffix(alt, "(mismatched types list and struct)") && !strings.HasSuffix(alt, "(mismatched types struct and list)") {
			return false
		}
	}
	return true
}

// sameBundle reports whether two paths are of the same bundle (paths not
// under bundles are all one).
func sameBundle(a, b string) bool {
	na, _, _ := bundlePath(a)
	nb, _, _ := bundlePath(b)
	return na == nb
}

// message is a CUE error's text without its path prefix or positions,
// including what it wraps ("import failed: cannot find package …").
func message(e cueerrors.Error) string {
	var parts []string
	for err := error(e); err != nil; err = errors.Unwrap(err) {
		// Each level of the chain in turn (errors.As would skip to the
		// first CUE error and lose the levels before it).
		ce, ok := err.(cueerrors.Error) //nolint:errorlint // walks the chain itself
		if !ok {
			parts = append(parts, err.Error())
			break
		}
		format, args := ce.Msg()
		if !strings.HasPrefix(format, "undefined field") {
			args = hideValues(args, ce.Path()) // (a field's name is no value)
		}
		if msg := fmt.Sprintf(format, args...); msg != "" {
			parts = append(parts, msg)
		}
	}
	msg := readable(strings.Join(parts, ": "))
	if field := undefinedField.FindStringSubmatch(msg); field != nil {
		msg += fmt.Sprintf(" (if it reads a label or fact a cluster may not have, give a default: (*cluster.labels.%s | \"\"); inside a struct, a name refers to the nearest field of that name)", field[1])
	}
	if ref := notFound.FindStringSubmatch(msg); ref != nil {
		msg += fmt.Sprintf(" (if it is a string, write it in quotes, with any '-' inside: %q)", ref[1])
	}
	if strings.Contains(msg, "cannot fetch") {
		msg += " (Flotilla evaluates fleets offline and never fetches CUE modules from a registry: " +
			"keep shared CUE in the repository, as packages of its own module)"
	}
	return msg
}

// readable says in words what CUE says in its own terms: the parser's
// token names ('IDENT'), the schema's regular expressions, builtin
// validators, `uint`.
func readable(msg string) string {
	msg = tokenWithText.ReplaceAllString(msg, "")
	for token, words := range tokenWords {
		msg = strings.ReplaceAll(msg, token, words)
	}
	msg = outOfBoundRegexp.ReplaceAllStringFunc(msg, func(m string) string {
		pattern := outOfBoundRegexp.FindStringSubmatch(m)[1]
		if words, ok := patternWords[pattern]; ok {
			return "(" + words + ")"
		}
		return "(does not match the regular expression " + pattern + ")"
	})
	msg = maxRunes.ReplaceAllString(msg, "(longer than $1 characters)")
	return uintWord.ReplaceAllString(msg, "${1}an integer >= 0")
}

var (
	// notFound is a reference to nothing, most often a string without
	// its quotes (namespace: web, dependsOn: [cert-manager]).
	notFound = regexp.MustCompile(`^reference "([^"]*)" not found$`)
	// undefinedField is a field read that is not there.
	undefinedField = regexp.MustCompile(`undefined field: ([A-Za-z_][A-Za-z0-9_-]*)$`)
	// tokenWithText is a token name before the text found: "found 'IDENT'
	// space" says "found space".
	tokenWithText = regexp.MustCompile(`'(IDENT|INT|FLOAT|STRING|IMAG)' `)
	// tokenWords are the token names left, in words.
	tokenWords = map[string]string{
		"'IDENT'": "a name", "'INT'": "a number", "'FLOAT'": "a number", "'STRING'": "a string",
		"'EOF'": "the end of the file",
	}
	outOfBoundRegexp = regexp.MustCompile(`\(out of bound =~("(?:[^"\\]|\\.)*")\)`)
	// patternWords are the schema's regular expressions, as
	// `out of bound =~"…"` quotes them, in words.
	patternWords = map[string]string{
		`"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"`:            "a name must be lower-case letters, digits and '-', and start and end with a letter or digit",
		`"^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"`: "a duration must be a number and a unit, such as 30s, 5m or 1h30m",
		`"^age1[0-9a-z]+$"`:                            "an age recipient is a public key starting with age1",
		`"^[0-9a-f]{40}$"`:                             "a revision is a full 40-character commit hash",
	}
	maxRunes = regexp.MustCompile(`\(does not satisfy strings\.MaxRunes\(([0-9]+)\)\)`)
	uintWord = regexp.MustCompile(`(^|[ (])uint\b`)
)

// hideValues keeps out of a message what could be a Secret's data: a
// struct or list, which CUE prints whole (a conflict over a bundle's
// `resources` would print every object in it, Secrets included); any value
// under a data, stringData or binaryData field of an object; and any string
// one hop or more before a Secret: in a bundle's resources (an annotation
// derived from a password), in a helper (`_db.password`, `#Creds.token`),
// which is where a Secret's data is computed from, or under a field whose
// name says secret (`values.dbPassword`, `apiToken`). The message keeps
// the path and positions, which say where to look (in a file the reader
// has), and numbers and booleans (`conflicting values 5 and 3`), and the
// strings of other values (`conflicting values "baseline" and
// "restricted"`), which is what a reader needs to see.
func hideValues(args []any, path []string) []any {
	secret, userData := false, false
	for _, p := range path {
		switch {
		case p == "data" || p == "stringData" || p == "binaryData":
			secret = true
		case p == "resources" || strings.HasPrefix(p, "_") || strings.HasPrefix(p, "#") || secretName.MatchString(p):
			userData = true
		}
	}
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
		text, ok := a.(string)
		if !ok {
			if s, isStringer := a.(fmt.Stringer); isStringer {
				text, ok = s.String(), true
			}
		}
		switch {
		case !ok:
		case strings.HasPrefix(text, "{"):
			out[i] = "{…}"
		case strings.HasPrefix(text, "["):
			out[i] = "[…]"
		case secret:
			out[i] = "(value hidden)"
		case userData && isStringLiteral(text):
			out[i] = "(a string, not shown)"
		}
	}
	return out
}

// secretName matches field names that say they hold a secret.
var secretName = regexp.MustCompile(`(?i)pass(word|wd|phrase)?|pwd|secret|token|credential|private|api_?key|access_?key|auth|cert|dsn|connection_?string|key$`)

// isStringLiteral reports whether CUE printed a string or bytes value
// (quoted), or an expression with one in it.
func isStringLiteral(text string) bool {
	return strings.ContainsAny(text, "\"'")
}

// dropSchemaPositions keeps only the fleet's own positions when there are
// any.
func dropSchemaPositions(ps []Position) []Position {
	own := slices.DeleteFunc(slices.Clone(ps), func(p Position) bool { return p.File == schemaDisplay })
	if len(own) > 0 {
		return own
	}
	return ps
}

// sortDiagnostics orders by first position, then path, then message, so
// output is stable.
func sortDiagnostics(ds Diagnostics) {
	slices.SortStableFunc(ds, func(a, b *Diagnostic) int {
		if c := cmp.Compare(firstPos(a), firstPos(b)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return cmp.Compare(a.Message, b.Message)
	})
}

func firstPos(d *Diagnostic) string {
	if len(d.Positions) == 0 {
		return ""
	}
	p := d.Positions[0]
	return fmt.Sprintf("%s:%09d:%09d", p.File, p.Line, p.Column)
}

// diagnostic builds one diagnostic at the given CUE positions.
func diagnostic(path, msg string, at ...token.Pos) *Diagnostic {
	return &Diagnostic{Path: path, Message: msg, Positions: positionsOf(at)}
}

// userPos returns where the fleet (not the embedded schema) writes v. A
// value unified with a schema definition has a conjunct from each; CUE's Pos
// picks one of them, often the schema's.
func userPos(v cue.Value) token.Pos {
	if ps := userPositions(v); len(ps) > 0 {
		return ps[0]
	}
	return v.Pos()
}

// userPositions returns every place the fleet writes a part of v: a base
// default and each overlay that constrains it, for example.
func userPositions(v cue.Value) []token.Pos {
	var out []token.Pos
	parts := []cue.Value{v}
	if op, args := v.Expr(); op == cue.AndOp {
		parts = args
	}
	for _, a := range parts {
		if p := a.Pos(); p.IsValid() && p.Filename() != schemaDisplay {
			out = append(out, p)
		}
	}
	return out
}

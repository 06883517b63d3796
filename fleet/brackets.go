package fleet

import (
	"fmt"
	"strings"

	"cuelang.org/go/cue/scanner"
	"cuelang.org/go/cue/token"
)

// unclosed finds, in a CUE file that does not parse, a bracket that is
// never closed: CUE's parser reports where it gave up (often the end of
// the file, "expected '}', found 'EOF'"), while the mistake is where the
// bracket opened. It returns the problem at the opening bracket, or nil
// when the brackets balance (the syntax error is something else).
func unclosed(name string, src []byte) *Diagnostic {
	type open struct {
		tok    token.Token
		pos    token.Pos
		interp bool // the parenthesis of a string interpolation \( … )
	}
	file := token.NewFile(name, -1, len(src))
	var sc scanner.Scanner
	failed := false
	sc.Init(file, src, func(token.Pos, string, []any) { failed = true }, 0)
	var stack []open
	interp := false
	closes := map[token.Token]token.Token{token.RBRACE: token.LBRACE, token.RBRACK: token.LBRACK, token.RPAREN: token.LPAREN}
	for !failed {
		pos, tok, lit := sc.Scan()
		switch tok {
		case token.EOF:
			if len(stack) == 0 {
				return nil
			}
			o := stack[len(stack)-1]
			return unclosedAt(o.pos, fmt.Sprintf("this '%s' is never closed (the file ends on line %d)", o.tok, pos.Line()))
		case token.INTERPOLATION:
			interp = strings.HasSuffix(lit, "(")
		case token.LBRACE, token.LBRACK, token.LPAREN:
			stack = append(stack, open{tok: tok, pos: pos, interp: interp && tok == token.LPAREN})
			interp = false
		case token.RBRACE, token.RBRACK, token.RPAREN:
			if len(stack) == 0 {
				return nil // a closer too many: the parser's message says it
			}
			o := stack[len(stack)-1]
			if o.tok != closes[tok] {
				return unclosedAt(o.pos, fmt.Sprintf("this '%s' is not closed before the '%s' at %d:%d", o.tok, tok, pos.Line(), pos.Column()))
			}
			// A closer that begins its line, indented less than the
			// opener's line, belongs to an outer bracket: the opener was
			// left open (people indent what they mean).
			if ind, first := indent(src, file, pos); first && ind < lineIndent(src, file, o.pos) {
				return unclosedAt(o.pos, fmt.Sprintf("this '%s' is not closed: the '%s' at %d:%d is indented as an outer one", o.tok, tok, pos.Line(), pos.Column()))
			}
			stack = stack[:len(stack)-1]
			if o.interp {
				interp = strings.HasSuffix(sc.ResumeInterpolation(), "(")
			}
		}
	}
	return nil
}

func unclosedAt(pos token.Pos, msg string) *Diagnostic {
	return &Diagnostic{Message: msg, Positions: positionsOf([]token.Pos{pos})}
}

// withUnclosed replaces the syntax errors of a file whose brackets do not
// balance by one problem at the bracket left open; read gives a file's
// text by its name in positions (false: unknown).
func withUnclosed(ds Diagnostics, read func(name string) ([]byte, bool)) Diagnostics {
	done := map[string]*Diagnostic{}
	var out Diagnostics
	for _, d := range ds {
		if d.Path != "" || len(d.Positions) == 0 {
			out = append(out, d)
			continue
		}
		name := d.Positions[0].File
		u, seen := done[name]
		if !seen {
			if src, ok := read(name); ok {
				u = unclosed(name, src)
			}
			done[name] = u
			if u != nil {
				out = append(out, u)
			}
		}
		if u == nil {
			out = append(out, d)
		}
	}
	return out
}

// indent is the indentation of pos's line, and whether pos is the first
// thing on it.
func indent(src []byte, file *token.File, pos token.Pos) (int, bool) {
	off := file.Offset(pos)
	start := off
	for start > 0 && src[start-1] != '\n' {
		start--
	}
	n := 0
	for start+n < off && (src[start+n] == ' ' || src[start+n] == '\t') {
		n++
	}
	return n, start+n == off
}

// lineIndent is the indentation of pos's line.
func lineIndent(src []byte, file *token.File, pos token.Pos) int {
	off := file.Offset(pos)
	start := off
	for start > 0 && src[start-1] != '\n' {
		start--
	}
	n := 0
	for start+n < len(src) && (src[start+n] == ' ' || src[start+n] == '\t') {
		n++
	}
	return n
}

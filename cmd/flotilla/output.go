package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// outputFlag is the value of a command's -o/--output flag. Every command that
// prints data registers it through addOutputFlag and prints through write, so
// the formats behave the same everywhere: text, json and yaml on every
// command, as in the kubectl family, and a command's own where it has more
// to show (markdown, html, wide).
type outputFlag struct {
	format  string
	allowed []string
	// aliases are other names of a format ("table" is status's text).
	aliases map[string]string
}

// commonFormats are the formats of every command that prints data.
var commonFormats = []string{"text", "json", "yaml"}

// addOutputFlag registers -o with the command's formats: the first is the
// default; text, json and yaml are always among them.
func addOutputFlag(cmd *cobra.Command, formats ...string) *outputFlag {
	for _, f := range commonFormats {
		if !slices.Contains(formats, f) {
			formats = append(formats, f)
		}
	}
	o := &outputFlag{format: formats[0], allowed: formats}
	cmd.Flags().StringVarP(&o.format, "output", "o", o.format,
		"output `FORMAT`: "+strings.Join(formats, "|"))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
	return o
}

// addQuietFlag adds -q to a command that prints progress.
func addQuietFlag(cmd *cobra.Command) {
	cmd.Flags().BoolP("quiet", "q", false, "print no progress and no notes: only the result, problems and warnings")
}

// progressTo is where a command says how far it got, and notes what it
// did not check: stderr, or nowhere with -q.
func progressTo(cmd *cobra.Command) io.Writer {
	if q, err := cmd.Flags().GetBool("quiet"); err == nil && q {
		return io.Discard
	}
	return cmd.ErrOrStderr()
}

// alias accepts another name for a format.
func (o *outputFlag) alias(name, format string) *outputFlag {
	if o.aliases == nil {
		o.aliases = map[string]string{}
	}
	o.aliases[name] = format
	return o
}

// validate reports an unsupported format before the command does any work.
func (o *outputFlag) validate() error {
	if f, ok := o.aliases[o.format]; ok {
		o.format = f
	}
	if !slices.Contains(o.allowed, o.format) {
		return fmt.Errorf("unknown output format %q: use one of %s", o.format, strings.Join(o.allowed, ", "))
	}
	return nil
}

// write prints v as JSON or YAML, or calls text for the human format.
func (o *outputFlag) write(w io.Writer, v any, text func(io.Writer) error) error {
	switch o.format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	default:
		return text(w)
	}
}

// listWriter prints a JSON or YAML list one element at a time, so that a
// batch command prints each result as it is made instead of holding the
// batch (and its whole encoding) in memory. The bytes are those write
// prints for the whole list.
type listWriter struct {
	w      io.Writer
	format string
	n      int
}

// list starts a list printed element by element in the JSON or YAML
// format; close ends it.
func (o *outputFlag) list(w io.Writer) *listWriter {
	return &listWriter{w: w, format: o.format}
}

// add prints one element.
func (l *listWriter) add(v any) error {
	var buf bytes.Buffer
	switch l.format {
	case "json":
		// What json.Encoder with SetIndent("", "  ") prints for the
		// element inside the list.
		data, err := json.MarshalIndent(v, "  ", "  ")
		if err != nil {
			return err
		}
		if l.n == 0 {
			buf.WriteString("[\n  ")
		} else {
			buf.WriteString(",\n  ")
		}
		buf.Write(data)
	case "yaml":
		// A one-element sequence is the element's entry in the whole
		// sequence.
		data, err := yaml.Marshal([]any{v})
		if err != nil {
			return err
		}
		buf.Write(data)
	default:
		return fmt.Errorf("a list in %s is not printed element by element", l.format)
	}
	l.n++
	_, err := l.w.Write(buf.Bytes())
	return err
}

// close ends the list ("[]" when it is empty).
func (l *listWriter) close() error {
	var end string
	switch {
	case l.n == 0:
		end = "[]\n"
	case l.format == "json":
		end = "\n]\n"
	default:
		return nil
	}
	_, err := io.WriteString(l.w, end)
	return err
}

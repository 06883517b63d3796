package main

import (
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
// the formats behave the same everywhere.
type outputFlag struct {
	format  string
	allowed []string
}

// addOutputFlag registers -o with the formats the command supports; the first
// is the default.
func addOutputFlag(cmd *cobra.Command, formats ...string) *outputFlag {
	o := &outputFlag{format: formats[0], allowed: formats}
	cmd.Flags().StringVarP(&o.format, "output", "o", o.format,
		"output format: "+strings.Join(formats, "|"))
	return o
}

// validate reports an unsupported format before the command does any work.
func (o *outputFlag) validate() error {
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

// Package schemas holds Flotilla's CUE schemas, the single source of truth
// for the fleet repository format (fleet.cue) and the status file format.
// They are embedded in the binary, so a fleet repository never vendors
// them: the fleet loader adds them to the fleet's own CUE package.
package schemas

import "embed"

// FS holds the schema files, each in CUE package `fleet`.
//
//go:embed *.cue
var FS embed.FS

// FleetFile is the name, inside FS, of the schema of fleet repositories.
const FleetFile = "fleet.cue"

// Version is the version of the fleet schema.
const Version = "v1alpha1"

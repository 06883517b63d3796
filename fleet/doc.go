// Package fleet is Flotilla's fleet model: it loads a fleet repository's
// CUE (fleet.cue and the embedded schemas), fills in one cluster's identity,
// and produces that cluster's Plan — which bundles select it, which overlays
// apply, and their concrete inputs. It is pure: no network, no cluster. It
// never imports render or sync.
package fleet

// Package render turns one planned bundle into Kubernetes objects. Each
// source kind has its own sub-package (helm, kustomize, manifests, cue)
// implementing the Renderer interface defined here. It never imports fleet
// or sync: the caller turns a planned release into a render request.
package render

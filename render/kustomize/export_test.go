package kustomize

// RemoteRef exposes remoteRef to the package's tests.
var RemoteRef = remoteRef

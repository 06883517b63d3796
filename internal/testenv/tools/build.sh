#!/usr/bin/env bash
# build.sh OUTDIR — build the binaries of Flotilla's real test clusters into
# OUTDIR: kube-apiserver, kube-controller-manager, kube-scheduler (from
# k8s.io/kubernetes), etcd, kwok, and kwok-stages.yaml (the Stage objects that
# make kwok's fake nodes and pods become Ready); for the companion-mode tests,
# Flux's source-controller and kustomize-controller with their CRDs
# (crds/flux/); Argo CD's CRDs (crds/argocd/) and argocd-appset, a program
# that renders ApplicationSets with Argo CD's own ApplicationSet code.
#
# The versions are the ones pinned in the go.mod files of the tools
# modules beside this script. OUTDIR/.stamp records a hash of those files (and
# of this script); when it matches and every binary is present, nothing is
# rebuilt, so `make testenv` is cheap after the first run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)


binaries=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok kwok-stages.yaml
	source-controller kustomize-controller argocd-appset crds/flux/kustomizations.yaml crds/argocd/applicationsets.yaml)
stamp=$(cat "$0" "$here"/*/go.mod "$here"/*/go.sum "$here"/*/*.go | sha256sum | cut -d' ' -f1)

complete() {
	[ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ] || return 1
	for b in "${binaries[@]}"; do [ -s "$out/$b" ] || return 1; done
}

if complete; then
	echo "testenv: binaries in $out are up to date"
	exit 0
fi
rm -f "$out/.stamp"

# Go builds of the control plane are large; say what is happening and how long
# it usually takes so a first run does not look hung.
step() { printf 'testenv: %s\n' "$*"; }
build_flags=(-trimpath "-ldflags=-s -w")
start=$SECONDS

step "building etcd (about 1 minute on 2 cores the first time)"
(cd "$here/etcd" && go build "${build_flags[@]}" -o "$out/etcd" .)

# Stamp the release into the binaries as Kubernetes' own build does, so that
# /version (and Flotilla's facts discovery) reports v1.36.3 rather than
# v0.0.0-master.
kube_version=$(cd "$here/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
kube_minor=$(echo "$kube_version" | cut -d. -f2)
v=k8s.io/component-base/version
kube_ldflags="-s -w -X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=$kube_minor -X $v.gitTreeState=clean"

step "building kube-apiserver, kube-controller-manager and kube-scheduler $kube_version (about 5 minutes on 2 cores the first time)"
(cd "$here/kubernetes" && go build -trimpath -ldflags="$kube_ldflags" -o "$out/" ./kube-apiserver ./kube-controller-manager ./kube-scheduler)

step "building kwok (about 1 minute the first time)"
(cd "$here/kwok" && go build "${build_flags[@]}" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok)

# The Stage objects ship in the kwok module: fast node initialisation, node
# heartbeats, and the fast pod lifecycle (ready, complete, delete).
kwok_dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
stages=(node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml
	pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)
{
	for s in "${stages[@]}"; do
		echo "---"
		cat "$kwok_dir/kustomize/stage/$s"
	done
} >"$out/kwok-stages.yaml.tmp"
mv "$out/kwok-stages.yaml.tmp" "$out/kwok-stages.yaml"

step "building Flux's source-controller and kustomize-controller (about 10 minutes on 2 cores the first time)"
(cd "$here/flux" && go build "${build_flags[@]}" -o "$out/" github.com/fluxcd/source-controller github.com/fluxcd/kustomize-controller)

step "building argocd-appset with Argo CD's ApplicationSet code (about 5 minutes on 2 cores the first time)"
(cd "$here/argocd" && go build "${build_flags[@]}" -o "$out/argocd-appset" .)

# The CRDs of the same module versions, one file per kind.
mkdir -p "$out/crds/flux" "$out/crds/argocd"
for m in source-controller kustomize-controller; do
	dir=$(cd "$here/flux" && go list -m -f '{{.Dir}}' "github.com/fluxcd/$m")
	for f in "$dir"/config/crd/bases/*.yaml; do
		kind=$(basename "$f" .yaml)
		cp "$f" "$out/crds/flux/${kind#*_}.yaml"
	done
done
argocd_dir=$(cd "$here/argocd" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)
for kind in application applicationset appproject; do
	cp "$argocd_dir/manifests/crds/$kind-crd.yaml" "$out/crds/argocd/${kind}s.yaml"
done
chmod -R u+w "$out/crds"

echo "$stamp" >"$out/.stamp"
step "done in $((SECONDS - start))s: $out"

#!/usr/bin/env bash
# Renders the kustomize base and validates every manifest offline against the Kubernetes
# schemas. Needs kubectl (for `kubectl kustomize`) and kubernetes-validate (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
kubectl kustomize deploy/kubernetes > "$out/rendered.yaml"
kubernetes-validate --strict "$out/rendered.yaml" examples/at-noisy/deployment.yaml
echo "manifests valid: $(grep -c '^kind:' "$out/rendered.yaml") rendered objects + examples/at-noisy"

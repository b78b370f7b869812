#!/usr/bin/env bash
# Renders the kustomize base and validates every manifest offline against the Kubernetes
# schemas. Needs kubectl (for `kubectl kustomize`) and kubernetes-validate (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
kubectl kustomize deploy/kubernetes > "$out/rendered.yaml"
kubectl kustomize deploy/kubernetes-example > "$out/example.yaml"
if grep -q '^kind: Secret' "$out/rendered.yaml"; then
  echo "the base must hold no Secret: applying it would replace the operator's" >&2
  exit 1
fi
kubernetes-validate --strict "$out/rendered.yaml" "$out/example.yaml" examples/at-noisy/deployment.yaml
echo "manifests valid: $(grep -c '^kind:' "$out/rendered.yaml") rendered objects, the kubernetes-example overlay, examples/at-noisy"

#!/usr/bin/env bash
# Renders the kustomize base, its example overlay and the Helm chart (default values and
# every toggle on), and validates every manifest offline: built-in kinds against the
# Kubernetes schemas (kubernetes-validate --strict), the Prometheus Operator's kinds
# against their CRDs (validate_crds.py, which also parses each alert's PromQL).
# Needs kubectl (kubectl kustomize), helm, and the Python packages kubernetes-validate,
# jsonschema, pyyaml and promql-parser; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM=${HELM:-helm}
PYTHON=${PYTHON:-python3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
kubectl kustomize deploy/kubernetes > "$out/rendered.yaml"
kubectl kustomize deploy/kubernetes-example > "$out/example.yaml"
if grep -q '^kind: Secret' "$out/rendered.yaml"; then
  echo "the base must hold no Secret: applying it would replace the operator's" >&2
  exit 1
fi
chart=deploy/helm/at-forwarder
"$HELM" lint --strict "$chart" -f "$chart/ci/all-on-values.yaml" 2>&1 | grep -v 'found symbolic link' >&2
# The chart's ConfigMap is the base's configuration file (a symlink, followed by helm).
"$HELM" template at-forwarder "$chart" -n kube-system 2>/dev/null > "$out/chart.yaml"
"$HELM" template at-forwarder "$chart" -n kube-system -f "$chart/ci/all-on-values.yaml" \
  2>/dev/null > "$out/chart-all.yaml"
if grep -q '^kind: Secret' "$out/chart.yaml"; then
  echo "the chart must create no Secret by default" >&2
  exit 1
fi
kubernetes-validate --strict --quiet "$out/rendered.yaml" "$out/example.yaml" \
  "$out/chart.yaml" "$out/chart-all.yaml" examples/at-noisy/deployment.yaml
"$PYTHON" deploy/validate_crds.py deploy/schemas "$out/chart.yaml" "$out/chart-all.yaml"
echo "manifests valid: base $(grep -c '^kind:' "$out/rendered.yaml") objects, the example overlay," \
  "chart $(grep -c '^kind:' "$out/chart.yaml") objects by default and $(grep -c '^kind:' "$out/chart-all.yaml") with every toggle on, examples/at-noisy"

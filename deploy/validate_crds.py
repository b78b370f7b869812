#!/usr/bin/env python3
"""Validates custom resources of rendered manifests against their CRDs' schemas, offline.

Usage: validate_crds.py CRD_DIR MANIFEST...

Each object whose kind a CRD of CRD_DIR defines is checked against that CRD's
openAPIV3Schema for its version, strictly: a field the schema does not list is an error
(the API server would silently prune it). The expressions of PrometheusRule objects are
parsed with promql-parser (the Rust PromQL parser's Python binding). That every metric
they read is one at-forwarder exports is a test of the crate (tests/it/deploy.rs).
"""
import argparse
import sys

import jsonschema
import promql_parser
import yaml


def strict(schema):
    """additionalProperties: false wherever the schema lists properties and does not
    keep unknown fields."""
    if isinstance(schema, dict):
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def load_crds(directory):
    import pathlib
    schemas = {}
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            # metadata is the API server's: an object there, as for every kind.
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("crds")
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args()
    schemas = load_crds(args.crds)
    failures = checked = 0
    for path in args.manifests:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in schemas:
                continue
            checked += 1
            where = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
            for error in jsonschema.Draft7Validator(schemas[key]).iter_errors(doc):
                failures += 1
                print(f"FAIL {where}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
            if doc["kind"] != "PrometheusRule":
                continue
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    try:
                        promql_parser.parse(rule["expr"])
                    except Exception as e:  # the parser's own error type
                        failures += 1
                        print(f"FAIL {where}: {rule.get('alert')}: {e}")
    print(f"custom resources: {checked} checked, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

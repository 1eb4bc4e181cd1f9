#!/usr/bin/python3
"""Validates a JSON file against a JSON Schema (python3-jsonschema).

usage: validate_json.py SCHEMA FILE   -> exit 0 if valid, 1 with the reason."""
import json
import sys

import jsonschema


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    with open(sys.argv[2], encoding="utf-8") as f:
        doc = json.load(f)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        where = "/".join(str(p) for p in e.path) or "(root)"
        print(f"{where}: {e.message}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

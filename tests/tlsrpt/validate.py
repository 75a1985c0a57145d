#!/usr/bin/python3
"""Validates JSON files against a JSON Schema (draft 2020-12).

    validate.py SCHEMA FILE...

Exits 0 when every FILE is valid, 1 when one is not (each error printed with the
path to the failing value), 2 when the schema itself is not a valid schema.
Run with Debian's /usr/bin/python3, whose python3-jsonschema install-deps.sh installs.
"""

import json
import sys

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: validate.py SCHEMA FILE...")
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        print(f"validate.py: {sys.argv[1]} is not a valid schema: {e.message}")
        sys.exit(2)
    validator = Draft202012Validator(schema)
    bad = 0
    for name in sys.argv[2:]:
        with open(name, encoding="utf-8") as f:
            doc = json.load(f)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for e in errors:
            where = "/".join(str(p) for p in e.absolute_path) or "(top)"
            print(f"validate.py: {name}: {where}: {e.message}")
        bad += bool(errors)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

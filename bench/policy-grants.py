#!/usr/bin/env python3
"""Writes a policy directory with N grants for `tollbu policy check` timing.

Usage: bench/policy-grants.py N DIR

One service, one operation; N grants, each for its own consumer (valid
organisation numbers), spread over five purposes, so no two grants overlap
and `policy check` prints no warning. Every grant shares the operation and
many share a purpose: the shape of a national registry's agreements.
"""
import os
import sys

WEIGHTS = [3, 2, 7, 6, 5, 4, 3, 2]


def orgnos():
    n = 0
    while True:
        prefix = f"{80000000 + n:08d}"
        n += 1
        r = sum(int(d) * w for d, w in zip(prefix, WEIGHTS)) % 11
        if r == 1:
            continue
        yield prefix + str(0 if r == 0 else 11 - r)


def main():
    count, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    parts = ['''[service]
id = "population"
subject = { param = "pid", kind = "national-identity-number" }
fields = ["pid", "name.given", "name.family", "address.city"]

[[service.operation]]
id = "get-person"
method = "GET"
path = "/persons/{pid}"
''']
    purposes = ["benefit-assessment", "case-handling", "tax-assessment", "health-care", "education"]
    for i, org in zip(range(count), orgnos()):
        parts.append(f'''
[[grant]]
id = "agreement-{i:06d}"
consumer = ["{org}"]
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["{purposes[i % len(purposes)]}"]
legal_basis = "Agreement {i}"
fields = ["name"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2099-01-01T00:00:00Z
''')
    with open(os.path.join(out, "population.toml"), "w") as f:
        f.write("".join(parts))


if __name__ == "__main__":
    main()

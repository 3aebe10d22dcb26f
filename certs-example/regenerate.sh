#!/bin/sh
# Regenerates the demo-only keys and certificates in this directory.
# DEMO AND TESTS ONLY: see README.md.
set -eu
cd "$(dirname "$0")/.."
exec cargo run --quiet -p tollbu-devkit --example gen_certs -- certs-example

#!/usr/bin/env bash
# Prints the SHA-256 of Proto/: each .proto file's path and contents, in byte order of path.
# The same recipe is computed in Tests/WireTests/GeneratedCodeTests.swift.
set -euo pipefail
cd "$(dirname "$0")/../Proto"
find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort | while read -r f; do
  printf '%s\n' "$f"
  cat "$f"
done | sha256sum | cut -d' ' -f1

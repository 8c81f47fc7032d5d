#!/usr/bin/env bash
# Regenerates Sources/Wire/Generated from Proto/*.proto and records the sources' hash.
#
#   scripts/generate-protos.sh [path/to/protoc-gen-swift]
#
# Needs Debian's protoc (`apt-get install protobuf-compiler`) and protoc-gen-swift built from the
# pinned swift-protobuf (1.39.0). Without an argument it builds one in .build-protoc-gen-swift/.
# The generated code is committed; the build does not run protoc. WireTests fails when the
# committed code is older than the .proto files.
set -euo pipefail
cd "$(dirname "$0")/.."

plugin=${1:-}
if [[ -z "$plugin" ]]; then
  src=.build-protoc-gen-swift/swift-protobuf
  if [[ ! -d "$src" ]]; then
    git clone --quiet https://github.com/apple/swift-protobuf "$src"
    git -C "$src" checkout --quiet 1.39.0
  fi
  (cd "$src" && swift build -c release --product protoc-gen-swift >&2)
  plugin="$src/.build/release/protoc-gen-swift"
fi

out=Sources/Wire/Generated
rm -f "$out"/*.pb.swift
protos=$(cd Proto && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
# shellcheck disable=SC2086
protoc --plugin=protoc-gen-swift="$plugin" \
  --proto_path=Proto \
  --swift_opt=Visibility=Public \
  --swift_opt=FileNaming=PathToUnderscores \
  --swift_out="$out" $protos
scripts/proto-hash.sh > "$out/PROTO_SHA256"
echo "generated $(ls "$out"/*.pb.swift | wc -l) files into $out (sources hash $(cat "$out/PROTO_SHA256"))"

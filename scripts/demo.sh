#!/usr/bin/env bash
# README command 1: set up (scripts/setup.sh: the Debian packages the build needs, only those
# missing), build the library and the `lmsample` tool in build/, and run `lmsample demo`.
# Extra arguments go to the demo (e.g. --batch 64). A second run installs nothing and rebuilds
# only what changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j --target lmsample_cli
./build/lmsample demo "$@"

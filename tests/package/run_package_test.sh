#!/usr/bin/env bash
# Installs the built lmsample into a fresh prefix and uses it as a consumer would:
#  1. `cmake --install <build> --prefix <work>/prefix`; the installed CMake files name only the
#     prefix (no build or source tree path, include dir <prefix>/include only);
#  2. liblmsample.so has SONAME liblmsample.so.<major> and exports exactly the public API:
#     the C functions lms_* and the C++ functions of lmsample.hpp (nm -D, demangled);
#  3. a C project and a C++ project (tests/package/{c,cpp}) find_package(lmsample CONFIG), build
#     against lmsample::lmsample (and the C++ one also against lmsample::lmsample_static) and run;
#  4. consumer.c built with `cc $(pkg-config --cflags --libs lmsample)` runs (shared library), and
#     linked with liblmsample.a and `pkg-config --static --libs` (Libs.private) runs.
# Usage: run_package_test.sh <build dir> <work dir> [<config>]
# Environment: CMAKE, CC, CXX, NM, GENERATOR (defaults: from PATH / CMake's default).
set -euo pipefail

build=$1
work=$2
config=${3:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
CMAKE=${CMAKE:-cmake}
CC=${CC:-cc}
CXX=${CXX:-c++}
NM=${NM:-nm}
gen=()
if [ -n "${GENERATOR:-}" ]; then gen=(-G "$GENERATOR"); fi
cfg=()
if [ -n "$config" ]; then cfg=(--config "$config"); fi
build_type=${config:-Release}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

# ---- 1. install ----
step "cmake --install $build --prefix $prefix"
"$CMAKE" --install "$build" --prefix "$prefix" "${cfg[@]}" >"$work/install.log" ||
  { cat "$work/install.log"; fail "cmake --install"; }
so_link=$(find "$prefix" -name liblmsample.so -print -quit)
[ -n "$so_link" ] || fail "no liblmsample.so under $prefix"
libdir=$(dirname "$so_link")
for f in "$prefix/include/lmsample/lmsample.h" "$prefix/include/lmsample/lmsample.hpp" \
  "$libdir/liblmsample.a" "$libdir/pkgconfig/lmsample.pc" \
  "$libdir/cmake/lmsample/lmsampleConfig.cmake" \
  "$libdir/cmake/lmsample/lmsampleConfigVersion.cmake" \
  "$libdir/cmake/lmsample/lmsampleTargets.cmake"; do
  [ -f "$f" ] || fail "not installed: $f"
done
if grep -rlF -e "$source_dir/" -e "$(cd "$build" && pwd)/" "$libdir/cmake/lmsample" \
  "$libdir/pkgconfig"; then
  fail "the installed CMake or pkg-config files above name the source or build tree"
fi
includes=$(grep -h 'INTERFACE_INCLUDE_DIRECTORIES' "$libdir/cmake/lmsample/lmsampleTargets.cmake" |
  sort -u)
# shellcheck disable=SC2016 # the literal ${_IMPORT_PREFIX} of the export file
[ "$includes" = '  INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include"' ] ||
  fail "installed include directories: $includes"

# ---- 2. SONAME and exported symbols ----
so=$(readlink -f "$so_link")
soname=$(LC_ALL=C readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = liblmsample.so.0 ] || fail "SONAME is '$soname', expected liblmsample.so.0"
[ -e "$libdir/$soname" ] || fail "$libdir/$soname missing"

cxx_api='sample|workspace_size|backend_available|resolve_backend|version|contract_version|row_status_name|verify_chain|verify_chain_workspace_size|verify_tree|verify_tree_workspace_size'
# Reads demangled symbol names, prints those that are not public API (nor the version node).
not_public() {
  grep -Ev "^(lms_[a-z0-9_]+|lmsample::($cxx_api)\(.*|LMSAMPLE_[0-9A-Z_]+)$" || true
}
# The filter itself must catch internal names.
probe=$(printf '%s\n' 'lms_sample' 'lmsample::sample(lmsample::Request const&)' \
  'lmsample::cpu::sample(lmsample::Request const&)' 'lmsample::api::validate_request(int)' \
  'lmsample::sample_rows(int)' 'std::__cxx11::basic_string<char>::~basic_string()' | not_public)
[ "$(echo "$probe" | wc -l)" = 4 ] || fail "export filter self-test: got '$probe'"

"$NM" -D --defined-only -C "$so" | sed -E 's/^[0-9a-fA-F]* *[A-Za-z] //; s/@.*$//' |
  sort -u >"$work/exports.txt"
leaked=$(not_public <"$work/exports.txt")
[ -z "$leaked" ] || fail "liblmsample.so exports more than the public API:
$leaked"
c_api=$(grep -oE '\blms_[a-z0-9_]+\(' "$prefix/include/lmsample/lmsample.h" | tr -d '(' | sort -u)
[ -n "$c_api" ] || fail "no lms_* function found in lmsample.h"
for f in $c_api; do
  grep -qx "$f" "$work/exports.txt" || fail "C function $f is not exported"
done
for f in ${cxx_api//|/ }; do
  grep -q "^lmsample::$f(" "$work/exports.txt" || fail "C++ function lmsample::$f is not exported"
done
echo "exports: $(wc -l <"$work/exports.txt") symbols, all public API"

# ---- 3. CMake consumers ----
for project in c cpp; do
  step "CMake consumer: $project"
  "$CMAKE" -S "$here/$project" -B "$work/$project" "${gen[@]}" -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
    >"$work/$project.configure.log" 2>&1 ||
    { cat "$work/$project.configure.log"; fail "configure $project consumer"; }
  found=$(sed -n 's/^lmsample_DIR:PATH=//p' "$work/$project/CMakeCache.txt")
  [ "$found" = "$libdir/cmake/lmsample" ] || fail "$project consumer found lmsample in '$found'"
  "$CMAKE" --build "$work/$project" -j2 "${cfg[@]}" >"$work/$project.build.log" 2>&1 ||
    { cat "$work/$project.build.log"; fail "build $project consumer"; }
done
run() {
  local exe
  exe=$(find "$work" -type f -name "$1" -perm -u+x -print -quit)
  [ -n "$exe" ] || fail "$1 not built"
  "$exe" || fail "$1 exited with $?"
}
run consumer_c
run consumer_shared
run consumer_static
needed=$(readelf -d "$(find "$work/cpp" -type f -name consumer_static -print -quit)")
case $needed in *"NEEDED"*"[liblmsample"*) fail "consumer_static needs liblmsample.so" ;; esac

# ---- 4. pkg-config ----
step "pkg-config consumer"
export PKG_CONFIG_PATH=$libdir/pkgconfig
version=$(pkg-config --modversion lmsample)
read -ra pc_flags <<<"$(pkg-config --cflags --libs lmsample)"
"$CC" -Wall -Wextra -Werror -DEXPECTED_VERSION="\"$version\"" "$here/c/consumer.c" \
  "${pc_flags[@]}" -o "$work/consumer_pc"
LD_LIBRARY_PATH=$libdir "$work/consumer_pc" || fail "consumer_pc exited with $?"
# Static: liblmsample.a in place of -llmsample, then everything else --static asks for.
read -ra pc_static <<<"$(pkg-config --static --libs lmsample)"
static_flags=()
for f in "${pc_static[@]}"; do
  [ "$f" = -llmsample ] || static_flags+=("$f")
done
read -ra pc_cflags <<<"$(pkg-config --cflags lmsample)"
"$CC" -Wall -Wextra -Werror -DEXPECTED_VERSION="\"$version\"" "${pc_cflags[@]}" \
  "$here/c/consumer.c" "$libdir/liblmsample.a" "${static_flags[@]}" -o "$work/consumer_pc_static"
"$work/consumer_pc_static" || fail "consumer_pc_static exited with $?"
case $(readelf -d "$work/consumer_pc_static") in
  *"[liblmsample"*) fail "consumer_pc_static needs liblmsample.so" ;;
esac
echo "PASS: lmsample $version installed and used from C and C++ (CMake, pkg-config)"

// libFuzzer target: the tool's .npy reader and every consumer of what it reads (logits, per-row
// parameter files, token histories, bitmasks). Any input may be rejected, but only with the
// tool's own exceptions (NpyError, std::runtime_error): a crash, a sanitizer report, another
// exception or an accepted array whose sizes disagree with its header is a finding.
//   build: cmake -S . -B build-fuzz -DLMSAMPLE_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++
//   (scripts/fuzz.sh)
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "inputs.hpp"
#include "npy.hpp"

using namespace lmsample::tool;  // NOLINT

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Each consumer, on the array and on a batch of 1 and of its first dimension.
void consume(const NpyArray& a) {
  check(a.header.data_bytes == static_cast<uint64_t>(a.count()) * npy_type_size(a.header.type));
  const int64_t batch = a.rank() >= 1 ? a.shape()[0] : 1;
  for (const int64_t b : {int64_t{1}, batch}) {
    if (b < 0 || b > (int64_t{1} << 20)) continue;
    try {
      check(float_param(a, "f", b).size() == static_cast<size_t>(b));
    } catch (const std::runtime_error&) {
    }
    try {
      check(int32_param(a, "i", b).size() == static_cast<size_t>(b));
    } catch (const std::runtime_error&) {
    }
    try {
      check(uint64_param(a, "u", b).size() == static_cast<size_t>(b));
    } catch (const std::runtime_error&) {
    }
    try {
      const TokenLists t = token_lists(a, "t", b);
      check(t.offsets.size() == static_cast<size_t>(b) + 1);
    } catch (const std::runtime_error&) {
    }
    for (const int64_t v : {int64_t{1}, int64_t{64}, int64_t{1000}}) {
      try {
        bitmask_from_npy(a, "m", b, v);
      } catch (const std::runtime_error&) {
      }
    }
  }
  for (const bool bf16 : {false, true}) {
    try {
      const LogitsData d = logits_from_npy(a, bf16);
      check(d.batch >= 0 && d.vocab >= 1);
    } catch (const std::runtime_error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  NpyArray a;
  try {
    a = parse_npy(data, size, "fuzz.npy");
  } catch (const std::runtime_error&) {
    return 0;
  }
  consume(a);
  return 0;
}

// libFuzzer target: random requests (every dtype, row strides, bitmasks, bias, histories, invalid
// parameters, top logprobs; V from 1 to 5,000, enough for every selection path including the
// radix fallbacks) built from the input by the tests' own generators (tests/test_util.hpp), run
// on the CPU backend (both instruction-set builds) and compared bit for bit with the sort-based
// reference (src/check/); then every output invariant. A difference aborts.
//   build: cmake -S . -B build-fuzz -DLMSAMPLE_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++
//   (scripts/fuzz.sh)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "check/reference.hpp"
#include "test_util.hpp"

namespace {

void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_sample: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint64_t seed = 0;
  std::memcpy(&seed, data, size < 8 ? size : 8);
  const uint8_t shape = data[size - 1];
  static const int64_t kVocab[] = {1, 2, 3, 31, 64, 111, 1000, 2049, 5000};
  static const lmsample::DType kTypes[] = {lmsample::DType::kFloat32, lmsample::DType::kBFloat16,
                                           lmsample::DType::kFloat16};
  const int64_t v = kVocab[shape % 9];
  const lmsample::DType dt = kTypes[(shape / 9) % 3];
  lmstest::Rng rng(seed ^ 0x9e3779b97f4a7c15ull);
  const int rows = static_cast<int>(rng.range(1, 6));
  std::vector<lmstest::RowSpec> spec;
  for (int r = 0; r < rows; ++r) spec.push_back(lmstest::random_row(rng, dt, v));
  lmstest::Layout layout;
  layout.stride_extra = rng.chance(0.5) ? rng.range(1, 70) : 0;
  layout.mask_extra_words = rng.chance(0.3) ? rng.range(1, 3) : 0;
  layout.csr_base = rng.chance(0.5) ? rng.range(1, 9) : 0;
  layout.always_pass_params = rng.chance(0.3);
  const int32_t top = static_cast<int32_t>(rng.range(0, 2) == 0 ? 0 : rng.range(1, 64));
  const lmstest::Batch batch(dt, v, std::move(spec), top, layout);
  const lmsample::Request& req = batch.request();
  lmstest::OutBuf want(batch.batch(), top);
  lmsample::check::reference_sample_batch(req, want.outputs());
  for (const bool baseline : {false, true}) {
    lmstest::OutBuf got(batch.batch(), top);
    lmsample::Status st;
    {
      lmstest::ScopedIsa isa(baseline ? "baseline" : nullptr);
      st = lmstest::run_cpu(req, got, static_cast<int>(rng.range(1, 3)));
    }
    if (st.code != lmsample::Code::kOk && st.code != lmsample::Code::kInvalidRowParameter)
      fail("sample() failed: " + st.message);
    const std::string diff = lmstest::first_difference(got, want, "cpu", "reference");
    if (!diff.empty()) fail(diff);
    for (int64_t r = 0; r < batch.batch(); ++r) {
      const size_t i = static_cast<size_t>(r);
      const int32_t s = got.status[i], t = got.tokens[i];
      if (s < lmsample::kRowOk || s > lmsample::kRowBadTokenId) fail("status out of range");
      if (s == lmsample::kRowOk ? (t < 0 || t >= v || got.kept[i] < 1 || got.kept[i] > v)
                                : (t != -1 || got.kept[i] != 0))
        fail("row " + std::to_string(r) + ": token / kept inconsistent with its status");
      if (s == lmsample::kRowOk && !(got.logprob[i] <= 0.0f)) fail("logprob above 0");
    }
  }
  return 0;
}

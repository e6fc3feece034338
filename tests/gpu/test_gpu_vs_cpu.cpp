// The CUDA backend against the CPU backend, bit for bit, on thousands of random rows: every dtype,
// vocabularies from 1 to 2^20, batches from 1 to 989, mixed per-row parameters in one batch,
// bitmasks, logit bias and token histories (CSR), odd layouts, special rows, invalid parameters.
// Tokens, statuses and kept-set sizes must be equal; logprobs and top logprobs within 1e-6
// (relative above 1), top ids equal; every GPU output element must be written.
#include <cstdlib>
#include <iterator>
#include <string>
#include <vector>

#include "gpu_test_util.hpp"

namespace lmsgpu {
namespace {

constexpr DType kF32 = DType::kFloat32;
constexpr DType kBF16 = DType::kBFloat16;
constexpr DType kF16 = DType::kFloat16;

uint64_t name_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

//! A group with the layout, top-logprob count and stream chosen by its index (so that every
//! vocabulary sees every layout over its groups).
GroupCfg make_group(const std::string& test, DType dt, int64_t v, int64_t b, int idx) {
  GroupCfg g;
  g.dtype = dt;
  g.vocab = v;
  g.batch = small_mode() ? std::min<int64_t>(b, 8) : b;
  g.seed = mix_seed(base_seed(), name_hash(test) + static_cast<uint64_t>(idx) * 7919u +
                                     static_cast<uint64_t>(v) * 31u + static_cast<uint64_t>(b));
  static const int32_t tops[] = {0, 5, 20, 64, 1, 0, 20};
  g.top_n = tops[idx % 7];
  switch (idx % 6) {
    case 0:
      break;
    case 1:
      g.layout.stride_extra = 1;
      g.layout.pass_all_params = true;
      break;  // odd stride: misaligned rows
    case 2:
      g.layout = {3, 1, 1, 5, false};
      break;  // misaligned base, longer mask rows, CSR base 5
    case 3:
      g.layout.stride_extra = 64;
      g.layout.csr_base = 2;
      g.optional_outputs = false;
      break;
    case 4:
      g.default_stream = true;
      break;
    default:
      g.layout = {8, 3, 3, 0, true};
      break;
  }
  g.name = test + "#" + std::to_string(idx);
  return g;
}

struct Shape {
  DType dt;
  int64_t v;
  int64_t b;
};

class GpuVsCpu : public GpuTest {
 protected:
  void run_shapes(const std::string& test, const std::vector<Shape>& shapes,
                  const Mix* mix = nullptr, lmsample::GpuKeys keys = lmsample::GpuKeys::kAuto) {
    Compared total;
    int idx = 0;
    for (const Shape& s : shapes) {
      if (small_mode() && s.v > 151936) continue;
      GroupCfg g = make_group(test, s.dt, s.v, s.b, idx++);
      if (mix) g.mix = *mix;
      g.gpu_keys = keys;
      total.add(run_group(g));
      if (::testing::Test::HasFatalFailure()) break;
    }
    summary(total);
  }
};

std::vector<Shape> cross(std::vector<DType> dts, std::vector<int64_t> vs, std::vector<int64_t> bs) {
  std::vector<Shape> out;
  for (const int64_t v : vs)
    for (const DType d : dts)
      for (const int64_t b : bs) out.push_back({d, v, b});
  return out;
}

TEST_F(GpuVsCpu, SmallVocab) {
  run_shapes("SmallVocab", cross({kF32, kBF16, kF16}, {1, 2, 111}, {1, 7, 99, 989}));
}

TEST_F(GpuVsCpu, OddVocab) {  // not a multiple of the vector width or of 32 (bitmask words)
  run_shapes("OddVocab", {{kF32, 4097, 989},
                          {kBF16, 4097, 99},
                          {kF16, 4097, 7},
                          {kF32, 50001, 7},
                          {kBF16, 33, 989},
                          {kF16, 1000, 99}});
}

TEST_F(GpuVsCpu, Vocab32000) {
  run_shapes("Vocab32000", {{kF32, 32000, 1},
                            {kF32, 32000, 7},
                            {kF32, 32000, 99},
                            {kF32, 32000, 989},
                            {kBF16, 32000, 99},
                            {kBF16, 32000, 989},
                            {kF16, 32000, 7},
                            {kF16, 32000, 989}});
}

TEST_F(GpuVsCpu, Vocab128256) {
  run_shapes("Vocab128256", {{kF32, 128256, 1},
                             {kF32, 128256, 99},
                             {kBF16, 128256, 7},
                             {kBF16, 128256, 989},
                             {kF16, 128256, 7},
                             {kF16, 128256, 99}});
}

TEST_F(GpuVsCpu, Vocab151936) {
  run_shapes("Vocab151936", {{kF32, 151936, 7},
                             {kF32, 151936, 989},
                             {kBF16, 151936, 1},
                             {kBF16, 151936, 99},
                             {kBF16, 151936, 512},
                             {kF16, 151936, 7},
                             {kF16, 151936, 99}});
}

TEST_F(GpuVsCpu, Vocab262144) {
  run_shapes("Vocab262144", {{kF32, 262144, 7},
                             {kF32, 262144, 256},
                             {kBF16, 262144, 7},
                             {kBF16, 262144, 99},
                             {kF16, 262144, 1},
                             {kF16, 262144, 7}});
}

TEST_F(GpuVsCpu, Vocab1M) {
  run_shapes("Vocab1M", {{kF32, 1 << 20, 1},
                         {kF32, 1 << 20, 7},
                         {kF32, 1 << 20, 64},
                         {kBF16, 1 << 20, 7},
                         {kBF16, 1 << 20, 33},
                         {kF16, 1 << 20, 1},
                         {kF16, 1 << 20, 7}});
}

// Every special row kind in every batch: all -inf, all NaN, a few +inf, NaN/-inf/-0 sprinkled,
// everything masked, one valid token.
TEST_F(GpuVsCpu, SpecialRows) {
  Mix m;
  m.cycle_specials = true;
  run_shapes("SpecialRows", cross({kF32, kBF16, kF16}, {1, 2, 111, 32000}, {99}), &m);
  run_shapes("SpecialRowsLarge", cross({kF32, kBF16}, {151936}, {21}), &m);
}

// Many exact ties (quantized logits, a few distinct values, all equal) with top-k and top-p on
// most rows: ties at the k-th value and at the top-p boundary must be kept exactly as the CPU does.
TEST_F(GpuVsCpu, Ties) {
  Mix m;
  m.tie_heavy = true;
  run_shapes("Ties", cross({kF32, kBF16, kF16}, {2, 111, 32000}, {99}), &m);
  run_shapes("TiesLarge", cross({kF32, kBF16}, {151936}, {28}), &m);
}

// Only the plain parameters (no bitmask, bias or histories): the fast paths of a GPU backend.
TEST_F(GpuVsCpu, PlainParameters) {
  Mix m;
  m.mask = 0;
  m.bias = 0;
  m.penalties = 0;
  m.bad_token_id = 0;
  m.special = 0.02;
  run_shapes("Plain", cross({kF32, kBF16}, {32000, 151936}, {7, 99}), &m);
}

// GpuKeys::kStream (keys recomputed from the logits on every later read, bitmask included) on
// requests without bias or penalties, so each path (special rows, ties, top-n logprobs, the full
// selections) runs in that mode too; the last shape streams under kAuto as well (its keys would
// otherwise go to the workspace). Requests with bias or penalties fall back to keys on chip.
TEST_F(GpuVsCpu, Streamed) {
  const lmsample::GpuKeys kStream = lmsample::GpuKeys::kStream;
  Mix m;
  m.bias = 0;
  m.penalties = 0;
  m.bad_token_id = 0;
  run_shapes("Streamed",
             {{kF32, 151936, 99},
              {kBF16, 151936, 512},
              {kF16, 128256, 257},
              {kF32, 262144, 64},
              {kF32, 32000, 7},
              {kBF16, 111, 99}},
             &m, kStream);
  run_shapes("StreamedAuto", {{kBF16, 1 << 20, 3}}, &m);
  Mix specials = m;
  specials.cycle_specials = true;
  run_shapes("StreamedSpecials", cross({kF32, kBF16}, {151936}, {160}), &specials, kStream);
  Mix ties = m;
  ties.tie_heavy = true;
  run_shapes("StreamedTies", cross({kF32, kF16}, {151936}, {160}), &ties, kStream);
  run_shapes("StreamedFallback", {{kF32, 151936, 99}}, nullptr, kStream);
}

// Everything at once on most rows: bitmask, bias, penalties with long histories, bad ids.
TEST_F(GpuVsCpu, HeavyExtras) {
  Mix m;
  m.mask = 0.8;
  m.bias = 0.8;
  m.penalties = 0.8;
  m.long_history = 0.3;
  m.bad_param = 0.08;
  m.bad_token_id = 0.08;
  run_shapes("HeavyExtras", cross({kF32, kBF16, kF16}, {111, 32000}, {99}), &m);
  run_shapes("HeavyExtrasLarge", cross({kBF16}, {151936}, {28}), &m);
}

// Random shapes: vocabularies around powers of two and the usual model sizes, random batch sizes,
// dtypes and layouts; LMS_GPU_TEST_ROUNDS groups (default 24), a new draw for every
// LMS_GPU_TEST_SEED. Set LMS_GPU_TEST_ROUNDS=500 for a soak run.
TEST_F(GpuVsCpu, RandomShapes) {
  const char* env_rounds = std::getenv("LMS_GPU_TEST_ROUNDS");
  const int rounds = env_rounds ? std::atoi(env_rounds) : small_mode() ? 4 : 24;
  static const int64_t vocabs[] = {
      1,    2,     3,     31,    32,    33,     255,    256,    1023,   1024,   1025,   4095,  4096,
      8193, 32000, 32768, 50257, 65537, 100277, 128256, 151936, 152064, 201088, 256000, 262144};
  static const int64_t batches[] = {1, 2, 3, 5, 8, 16, 31, 64, 99, 128, 257};
  Rng rng(mix_seed(base_seed(), 424242));
  std::vector<Shape> shapes;
  for (int i = 0; i < rounds; ++i) {
    const int64_t v = vocabs[rng.range(0, static_cast<int64_t>(std::size(vocabs)) - 1)];
    int64_t b = batches[rng.range(0, static_cast<int64_t>(std::size(batches)) - 1)];
    while (b > 1 && b * v > (int64_t{1} << 25)) b /= 2;  // at most 32M logits per group
    const DType d = rng.chance(0.4) ? kF32 : rng.chance(0.6) ? kBF16 : kF16;
    shapes.push_back({d, v, b});
  }
  run_shapes("Random", shapes);
}

// The compute-sanitizer targets (scripts/gpu_check.sh): several shapes, small enough for memcheck
// and initcheck (SanitizerShapes) and for racecheck and synccheck, which are far slower
// (RacecheckShapes). Both are also part of the normal run.
TEST_F(GpuVsCpu, SanitizerShapes) {
  const int64_t b = small_mode() ? 3 : 7;
  run_shapes("Sanitizer", {{kF32, 1, b},
                           {kBF16, 2, b},
                           {kF16, 111, b},
                           {kF32, 4097, b},
                           {kBF16, 32000, b},
                           {kF32, 151936, 2},
                           {kF16, 151936, 2}});
}

TEST_F(GpuVsCpu, RacecheckShapes) {
  run_shapes("Racecheck", {{kF32, 1, 3},
                           {kBF16, 2, 3},
                           {kF16, 111, 3},
                           {kF32, 1000, 3},
                           {kBF16, 4097, 2},
                           {kF16, 20000, 1}});
}

}  // namespace
}  // namespace lmsgpu

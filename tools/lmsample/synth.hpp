// Deterministic random numbers and synthetic LLM-like logits for `demo`, `bench` and `verify`.
// Everything here is computed with integer arithmetic or plain IEEE operations, so the same seed
// gives the same data with any compiler and standard library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lmsample::tool {

//! SplitMix64: small, fast and fully specified (unlike std:: distributions).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  //! Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }
  //! Uniform integer in [0, n), n > 0 (unbiased: rejection sampling).
  uint64_t below(uint64_t n);
  //! Standard normal (Box-Muller).
  double normal();

 private:
  uint64_t s_;
};

//! One row of heavy-tailed LLM-like logits: token ranks are a random permutation and
//! logit = a - b * ln(rank + 1) + sigma * N(0, 1), so a few tokens dominate and a long tail
//! follows.
void fill_llm_row(float* row, int64_t vocab, Rng& rng, double a, double b, double sigma);

//! A batch of synthetic logits in the shapes an LLM serving engine sees.
struct SyntheticBatch {
  int64_t batch = 0;
  int64_t vocab = 0;
  std::vector<float> logits;      //!< [batch, vocab]
  std::vector<std::string> kind;  //!< per row: "llm", "peaked", "flat", "bitmask"
  std::vector<uint32_t> mask;     //!< [batch, mask_words]; empty when no row is masked
  int64_t mask_words = 0;
  std::vector<int64_t> history_offsets;  //!< batch + 1: generated tokens per row (for penalties)
  std::vector<int32_t> history;
};

//! Mostly heavy-tailed rows with random slopes, plus (when batch >= 4) two sharply peaked rows,
//! a flat row (all logits equal) and a row restricted by an allowed-token bitmask to ~1.5% of
//! the vocabulary. Each row also gets a 32-token generated history drawn from its 16 most likely
//! tokens.
SyntheticBatch make_synthetic_batch(int64_t batch, int64_t vocab, uint64_t seed,
                                    bool special_rows = true);

//! Round-to-nearest-even conversions for bf16 / fp16 logits.
uint16_t float_to_bf16(float f);
uint16_t float_to_fp16(float f);
std::vector<uint16_t> to_bf16(const std::vector<float>& v);
std::vector<uint16_t> to_fp16(const std::vector<float>& v);

}  // namespace lmsample::tool

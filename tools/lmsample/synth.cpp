// See synth.hpp.
#include "synth.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

namespace lmsample::tool {

uint64_t Rng::below(uint64_t n) {
  const uint64_t threshold = (uint64_t{0} - n) % n;  // 2^64 mod n: reject the biased low values
  while (true) {
    const uint64_t x = next();
    if (x >= threshold) return x % n;
  }
}

double Rng::normal() {
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

void fill_llm_row(float* row, int64_t vocab, Rng& rng, double a, double b, double sigma) {
  std::vector<int32_t> rank(static_cast<size_t>(vocab));
  std::iota(rank.begin(), rank.end(), 0);
  for (int64_t i = vocab - 1; i > 0; --i) {  // Fisher-Yates
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(rank[static_cast<size_t>(i)], rank[static_cast<size_t>(j)]);
  }
  for (int64_t t = 0; t < vocab; ++t) {
    const double r = rank[static_cast<size_t>(t)];
    row[t] = static_cast<float>(a - b * std::log(r + 1.0) + sigma * rng.normal());
  }
}

SyntheticBatch make_synthetic_batch(int64_t batch, int64_t vocab, uint64_t seed,
                                    bool special_rows) {
  SyntheticBatch s;
  s.batch = batch;
  s.vocab = vocab;
  s.logits.resize(static_cast<size_t>(batch * vocab));
  s.kind.assign(static_cast<size_t>(batch), "llm");
  Rng rng(seed);
  const bool special = special_rows && batch >= 4;
  int64_t mask_row = -1;
  for (int64_t r = 0; r < batch; ++r) {
    float* row = s.logits.data() + r * vocab;
    // ln-rank slope: p ~ (rank + 1)^-slope, from broad (hundreds of plausible tokens) to sharp.
    const double slope = 1.25 + 1.0 * rng.uniform();
    fill_llm_row(row, vocab, rng, 18.0 + 6.0 * rng.uniform(), slope, 0.4);
    if (special && (r == 1 || r == 2)) {  // one token far ahead: near-deterministic rows
      int64_t top = 0;
      for (int64_t t = 1; t < vocab; ++t)
        if (row[t] > row[top]) top = t;
      row[top] += 9.0f;
      s.kind[static_cast<size_t>(r)] = "peaked";
    } else if (special && r == batch - 2) {
      std::memset(row, 0, static_cast<size_t>(vocab) * sizeof(float));
      s.kind[static_cast<size_t>(r)] = "flat";
    } else if (special && r == batch - 1) {
      s.kind[static_cast<size_t>(r)] = "bitmask";
      mask_row = r;
    }
  }
  if (mask_row >= 0) {
    s.mask_words = (vocab + 31) / 32;
    s.mask.assign(static_cast<size_t>(batch * s.mask_words), 0xffffffffu);
    uint32_t* m = s.mask.data() + mask_row * s.mask_words;
    std::memset(m, 0, static_cast<size_t>(s.mask_words) * sizeof(uint32_t));
    const int64_t allowed = vocab / 64 + 1;  // a grammar allows a small subset
    for (int64_t i = 0; i < allowed; ++i) {
      const auto t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(vocab)));
      m[t / 32] |= 1u << (t % 32);
    }
  }
  // Generated history: 32 tokens per row drawn from the row's 16 most likely tokens (as text an
  // LLM has just produced tends to be), so that penalties have something to act on.
  s.history_offsets.push_back(0);
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  for (int64_t r = 0; r < batch; ++r) {
    const float* row = s.logits.data() + r * vocab;
    std::iota(ids.begin(), ids.end(), 0);
    const int64_t top = std::min<int64_t>(16, vocab);
    std::partial_sort(ids.begin(), ids.begin() + top, ids.end(), [row](int32_t a, int32_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    for (int i = 0; i < 32; ++i)
      s.history.push_back(ids[static_cast<size_t>(rng.below(static_cast<uint64_t>(top)))]);
    s.history_offsets.push_back(static_cast<int64_t>(s.history.size()));
  }
  return s;
}

uint16_t float_to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  if ((b & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((b >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

uint16_t float_to_fp16(float f) {
  // Round to nearest even through float arithmetic (after M. Dukhan's FP16 library).
  auto bits = [](float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
  };
  auto from = [](uint32_t u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
  };
  const float scale_to_inf = 0x1.0p+112f;
  const float scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xff000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = from((bias >> 1) + 0x07800000u) + base;
  const uint32_t b = bits(base);
  const uint32_t exp_bits = (b >> 13) & 0x00007c00u;
  const uint32_t mantissa_bits = b & 0x00000fffu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

std::vector<uint16_t> to_fp16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_fp16(v[i]);
  return out;
}

}  // namespace lmsample::tool

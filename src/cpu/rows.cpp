// CPU backend, one row (built once per instruction-set level, see rows.hpp). In passes, in passes
// over a float copy of the row:
//   load (convert, bitmask, canonicalise) -> sparse bias and penalties -> max/valid counts ->
//   top-k threshold (bounded heap scan, or radix select for large k) -> candidates (y >= v_k,
//   e >= min_p) with fixed-point weights -> top-p threshold (sort of a few candidates, or
//   radix select by mass) -> integer inverse-CDF draw in token-id order.
// No full sort anywhere; every decision is an exact comparison or integer sum (docs/contract.md).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include "core/math.hpp"
#include "core/params.hpp"
#include "core/philox.hpp"

#include "cpu/rows.hpp"

#ifndef LMS_CPU_ISA
#define LMS_CPU_ISA baseline
#endif

namespace lmsample::cpu::LMS_CPU_ISA {
namespace {

using core::neg_inf;
using core::order_key;

// ---------------------------------------------------------------------------------------------
// Load: key_i = key of canonical(x_i), or the key of -inf where the bitmask disallows token i.
// One block of kBlock tokens [i0, i0 + len) at a time, into out[0, len). Vectorisable.
struct RowSource {
  const void* data;  // the row's first element
  DType dtype;
  const uint32_t* mask;  // the row's bitmask words, or null

  void load(int64_t i0, int len, uint32_t* out) const {
    switch (dtype) {
      case DType::kFloat32: {
        const uint32_t* x = static_cast<const uint32_t*>(data) + i0;
        for (int j = 0; j < len; ++j) out[j] = core::canonical_key_of_bits(x[j]);
        break;
      }
      case DType::kBFloat16: {
        const uint16_t* x = static_cast<const uint16_t*>(data) + i0;
        for (int j = 0; j < len; ++j)
          out[j] = core::canonical_key_of_bits(static_cast<uint32_t>(x[j]) << 16);
        break;
      }
      case DType::kFloat16: {
        const uint16_t* x = static_cast<const uint16_t*>(data) + i0;
        for (int j = 0; j < len; ++j)
          out[j] = core::canonical_key_of_bits(core::float_bits(core::f16_to_float(x[j])));
        break;
      }
    }
    if (mask) {
      // i0 is a multiple of kBlock = 64: the block's bits are two consecutive words
      const int64_t w = i0 >> 5;
      const uint64_t bits = mask[w] | (len > 32 ? static_cast<uint64_t>(mask[w + 1]) << 32 : 0);
      for (int j = 0; j < len; ++j) out[j] = ((bits >> j) & 1u) ? out[j] : core::kKeyNegInf;
    }
  }
};

RowSource row_source(const Request& req, int64_t r, int64_t stride, int64_t mask_words) {
  const size_t elem = req.logits.dtype == DType::kFloat32 ? 4 : 2;
  return RowSource{
      static_cast<const char*>(req.logits.data) + static_cast<size_t>(r * stride) * elem,
      req.logits.dtype, req.allowed_mask ? req.allowed_mask + r * mask_words : nullptr};
}

void load_keys(uint32_t* keys, const RowSource& src, int64_t v) {
  for (int64_t i = 0; i < v; i += kBlock)
    src.load(i, static_cast<int>(std::min<int64_t>(kBlock, v - i)), keys + i);
}

bool sparse_ids_ok(const SparseRows& s, int64_t r, int64_t v) {
  if (!s.offsets) return true;
  for (int64_t j = s.offsets[r]; j < s.offsets[r + 1]; ++j)
    if (s.tokens[j] < 0 || s.tokens[j] >= v) return false;
  return true;
}

inline float value_of(uint32_t key) { return core::key_to_float(key); }
inline uint32_t key_of(float y) { return order_key(core::canonical(y)); }

// Bias (in the order given), then penalties on each distinct history token once.
// NOTE: canonicalising between two bias entries of one token changes nothing: NaN and -inf, -0
// and +0 give the same canonical results under every later add.
bool apply_sparse(uint32_t* keys, uint32_t* tags, const Request& req, int64_t r,
                  const core::RowSettings& s) {
  bool any = false;
  const SparseRows& b = req.logit_bias;
  if (b.offsets) {
    for (int64_t j = b.offsets[r]; j < b.offsets[r + 1]; ++j) {
      const int32_t t = b.tokens[j];
      keys[t] = key_of(core::add_rn(value_of(keys[t]), b.values[j]));
      any = true;
    }
  }
  const SparseRows& pr = req.prompt_tokens;
  const SparseRows& out = req.output_tokens;
  if (!pr.offsets && !out.offsets) return any;
  constexpr uint32_t kSeen = 0x80000000u;
  if (pr.offsets)
    for (int64_t j = pr.offsets[r]; j < pr.offsets[r + 1]; ++j) tags[pr.tokens[j]] |= kSeen;
  if (out.offsets)
    for (int64_t j = out.offsets[r]; j < out.offsets[r + 1]; ++j)
      tags[out.tokens[j]] = (tags[out.tokens[j]] + 1) | kSeen;
  auto visit = [&](const SparseRows& h) {
    if (!h.offsets) return;
    for (int64_t j = h.offsets[r]; j < h.offsets[r + 1]; ++j) {
      const int32_t t = h.tokens[j];
      if (tags[t] == 0) continue;  // already applied
      keys[t] = key_of(core::apply_penalties(value_of(keys[t]), true, tags[t] & ~kSeen, s));
      tags[t] = 0;
      any = true;
    }
  };
  visit(pr);
  visit(out);
  return any;
}

// ---------------------------------------------------------------------------------------------
// True when some key of keys[0, kBlock) is >= thr (vectorisable, no early exit).
inline bool any_at_least(const uint32_t* keys, uint32_t thr) {
  uint32_t any = 0;
  for (int j = 0; j < kBlock; ++j) any |= keys[j] >= thr;
  return any != 0;
}

// Row statistics: maximum key, first index of the maximum, valid and +inf counts, and the k-th
// largest key (with multiplicity) when 0 < k <= kHeapTopK.
struct RowStats {
  uint32_t max_key = core::kKeyNegInf;
  float m = neg_inf();
  int64_t argmax = -1;
  int64_t n_valid = 0;
  int64_t n_posinf = 0;
  uint32_t kth_key = 0;
};

// A min-heap of the k largest keys seen so far; most blocks are skipped by one vector test
// against its root.
class TopKeys {
 public:
  explicit TopKeys(int k) : k_(k) {}
  void block(const uint32_t* b) {
    if (size_ == k_ && !any_at_least(b, heap_[0] + 1)) return;
    for (int j = 0; j < kBlock; ++j) push(b[j]);
  }
  uint32_t root() const { return heap_[0]; }

 private:
  void push(uint32_t x) {
    if (size_ < k_) {
      heap_[size_++] = x;
      std::push_heap(heap_, heap_ + size_, std::greater<uint32_t>());
    } else if (x > heap_[0]) {
      std::pop_heap(heap_, heap_ + size_, std::greater<uint32_t>());
      heap_[size_ - 1] = x;
      std::push_heap(heap_, heap_ + size_, std::greater<uint32_t>());
    }
  }
  int k_;
  int size_ = 0;
  uint32_t heap_[kHeapTopK];
};

// One pass over the row: blocks come from `next(i0, len, buf)`, which returns the block's keys
// (padded with the key of -inf to kBlock). Every statistic is an integer reduction.
template <typename Next>
RowStats scan_row(int64_t v, int top_k, Next next) {
  const bool heap = top_k > 0 && top_k <= kHeapTopK;
  TopKeys top(heap ? top_k : 1);
  uint32_t mk = core::kKeyNegInf;
  int64_t max_block = -1, n_valid = 0, n_posinf = 0;
  uint32_t buf[kBlock];
  for (int64_t i0 = 0; i0 < v; i0 += kBlock) {
    const uint32_t* b = next(i0, static_cast<int>(std::min<int64_t>(kBlock, v - i0)), buf);
    uint32_t bm = 0;
    int nv = 0, ni = 0;
    for (int j = 0; j < kBlock; ++j) {
      bm = b[j] > bm ? b[j] : bm;
      nv += b[j] > core::kKeyNegInf;
      ni += b[j] == core::kKeyPosInf;
    }
    n_valid += nv;
    n_posinf += ni;
    if (bm > mk) {
      mk = bm;
      max_block = i0;
    }
    if (heap) top.block(b);
  }
  RowStats st;
  st.max_key = mk;
  st.m = value_of(mk);
  st.n_valid = n_valid;
  st.n_posinf = n_posinf;
  if (n_valid > 0) {
    const uint32_t* b =
        next(max_block, static_cast<int>(std::min<int64_t>(kBlock, v - max_block)), buf);
    st.argmax = max_block + (std::find(b, b + kBlock, mk) - b);
  }
  if (heap) st.kth_key = top.root();
  return st;
}

// Loads the row into `keys` and scans it in the same pass (rows without bias or penalties).
RowStats load_and_scan(uint32_t* keys, const RowSource& src, int64_t v, int top_k) {
  return scan_row(v, top_k, [&](int64_t i0, int len, uint32_t* buf) -> const uint32_t* {
    if (len == kBlock) {
      src.load(i0, len, keys + i0);
      return keys + i0;
    }
    std::fill(buf, buf + kBlock, core::kKeyNegInf);
    src.load(i0, len, buf);
    std::copy(buf, buf + len, keys + i0);
    return buf;
  });
}

// Scans keys already in place.
RowStats scan_keys(const uint32_t* keys, int64_t v, int top_k) {
  return scan_row(v, top_k, [&](int64_t i0, int len, uint32_t* buf) -> const uint32_t* {
    if (len == kBlock) return keys + i0;
    std::fill(buf, buf + kBlock, core::kKeyNegInf);
    std::copy(keys + i0, keys + i0 + len, buf);
    return buf;
  });
}

// Largest key t such that the weight of the entries with key >= t reaches `target`
// (1 <= target <= total weight). Three radix rounds of 11, 11 and 10 bits, each a histogram of
// the entries that match the digits chosen so far; after the first, those entries are compacted
// into `sel` (n + 1 slots), so the later rounds read only them. KeyAt(i) / WeightAt(i) describe
// entry i < n.
template <typename KeyAt, typename WeightAt>
uint32_t select_key_by_mass(int64_t n, KeyAt key_at, WeightAt weight_at, uint64_t target,
                            uint64_t* hist, int32_t* sel) {
  uint32_t prefix = 0, prefix_mask = 0;
  uint64_t above = 0;  // weight of entries whose key is above the current prefix range
  const int shifts[3] = {21, 10, 0};
  const int widths[3] = {11, 11, 10};
  int64_t m = n;  // entries still in the running: all of them, then sel[0, m)
  for (int round = 0; round < 3; ++round) {
    const int shift = shifts[round];
    const uint32_t nb = 1u << widths[round];
    std::fill(hist, hist + nb, uint64_t{0});
    if (round == 0) {
      for (int64_t i = 0; i < n; ++i) hist[key_at(i) >> shift] += weight_at(i);
    } else {
      for (int64_t j = 0; j < m; ++j) {
        const int64_t i = sel[j];
        const uint32_t k = key_at(i);
        if ((k & prefix_mask) == prefix) hist[(k >> shift) & (nb - 1)] += weight_at(i);
      }
    }
    uint32_t b = nb - 1;
    for (; b > 0; --b) {
      if (above + hist[b] >= target) break;
      above += hist[b];
    }
    prefix |= b << shift;
    prefix_mask |= (nb - 1) << shift;
    if (round == 0) {
      // the entries of the chosen bucket, in order (branch-free compaction): the next rounds
      // read only those
      m = 0;
      for (int64_t i = 0; i < n; ++i) {
        sel[m] = static_cast<int32_t>(i);
        m += (key_at(i) & prefix_mask) == prefix;
      }
    }
  }
  return prefix;
}

// Likelihoods of a block: e[j] for keys >= lo, else -1 (below every min_p). Vectorisable.
inline void block_likelihoods(const uint32_t* keys, uint32_t lo, float m, float inv_t, float* e) {
  for (int j = 0; j < kBlock; ++j) {
    const float l = core::rel_likelihood(value_of(keys[j]), m, inv_t);
    e[j] = keys[j] >= lo ? l : -1.0f;
  }
}

// Calls f(i0, block) for each block of kBlock keys of the row; the last one is padded with the
// key of -inf (a valid key is always above it).
template <typename F>
void for_each_block(const uint32_t* keys, int64_t v, F f) {
  int64_t i = 0;
  for (; i + kBlock <= v; i += kBlock) f(i, keys + i);
  if (i < v) {
    uint32_t tail[kBlock];
    std::fill(tail, tail + kBlock, core::kKeyNegInf);
    std::copy(keys + i, keys + v, tail);
    f(i, static_cast<const uint32_t*>(tail));
  }
}

// The smallest key a token must have to pass min-p, found without computing any likelihood:
// every token below it has z = (y - m) * inv_t < ln(min_p) - 1e-3, so its likelihood
// exp_nonpos(z) <= exp(z) * (1 + 2^-23) < min_p (the exp's stated bound, tests/test_core.cpp,
// held with a margin of 1e-3 in z). z is non-decreasing in y (rounding is monotone), so the keys
// that may pass form an upper set; a binary search over the keys finds its start. Tokens at or
// above it still get the exact test e >= min_p, so the result is the contract's whatever this
// returns (a key too low only costs time); ln is taken in double on the host only for that reason.
uint32_t min_p_floor_key(float m, float inv_t, float min_p) {
  uint32_t lo = core::kKeyNegInf + 1;
  if (!(min_p >= 1e-30f)) return lo;  // below ~2^-100 the bound is not stated
  const double z0 = std::log(static_cast<double>(min_p)) - 1e-3;
  const auto below = [&](uint32_t key) {  // false for z = NaN (inv_t = inf at y = m)
    return static_cast<double>(core::mul_rn(core::sub_rn(value_of(key), m), inv_t)) < z0;
  };
  uint32_t hi = key_of(m);  // below(hi) is false: z = 0 (or NaN)
  if (hi <= lo || !below(lo)) return lo;
  while (hi - lo > 1) {  // below(lo), !below(hi)
    const uint32_t mid = lo + (hi - lo) / 2;
    (below(mid) ? lo : hi) = mid;
  }
  return hi;
}

struct RowResult {
  int32_t token = -1;
  int32_t status = kRowOk;
  int32_t kept = 0;
};

// Top-p alone looks for its threshold among the tokens whose likelihood is at least
// kProbeLow = kProbe (1 - 2^-10), kProbe = 2^-12, whenever the tokens at or above kProbe already
// hold the target weight (a peaked row: N(0,1)*4 logits keep 96% of their weight there). Why
// that is exact: with A = {e >= kProbe} and kappa its lowest key, every token with a key >= kappa
// has e >= kProbe (1 - 2^-22) (exp_nonpos is within 7.9e-8 of exp, which increases, so it never
// falls more than that below a lower key's value), so it is a candidate; the tokens with
// keys >= kappa weigh at least A's weight >= the target, so the threshold is >= kappa, and above
// kappa the candidates are every token.
// The same holds for the narrower probe kProbe2 = 2^-8: where its tokens hold the target, the
// candidates are cut to those with e >= kProbe2 (1 - 2^-10), i.e. weight >= 2^31 - 2^21 (an
// integer, so the weight test is the likelihood test exactly), before they are ranked.
constexpr float kProbe = 1.0f / 4096.0f;
constexpr float kProbeLow = kProbe * (1.0f - 1.0f / 1024.0f);
constexpr float kProbe2 = 1.0f / 256.0f;
constexpr uint64_t kProbe2LowWeight = (uint64_t{1} << 31) - (uint64_t{1} << 21);

struct ProbeResult {
  uint64_t mass = 0;   // weight of the tokens with e >= kProbe
  uint64_t mass2 = 0;  // weight of the tokens with e >= kProbe2
  int64_t n = 0;       // candidates (e >= kProbeLow) written to ids / w, in token-id order
};

// One pass of likelihoods over the whole row with no filter: each block's weight into block_w
// (ceil(v / kBlock) entries) and the row's total, in 32-bit lanes only (so that the loops
// vectorise at full width): mass_of(e) = hi * 2^20 + lo with hi <= 2^19 and lo < 2^20, so a
// block's sums of each part fit in 32 bits and sum to the 64-bit total exactly. With probe, the
// top-p candidates above too (into ids / w, V + kBlock slots). inv_t finite.
static_assert(kBlock <= 4096, "a block's 32-bit part sums must not overflow");

template <bool kUnitT, bool kProbeOn>
uint64_t unfiltered_pass(const uint32_t* keys, int64_t v, float m, float inv_t, uint64_t* block_w,
                         ProbeResult* probe, int32_t* ids, uint64_t* w) {
  uint64_t total = 0, probe_mass = 0, probe_mass2 = 0;
  int64_t n = 0;
  for_each_block(keys, v, [&](int64_t i0, const uint32_t* b) {
    // (two loops, each of which vectorises; padding keys are -inf: e = 0)
    float e[kBlock];
    for (int j = 0; j < kBlock; ++j)
      e[j] = core::rel_likelihood_finite<kUnitT>(value_of(b[j]), m, inv_t);
    uint32_t sum_hi = 0, sum_lo = 0, pr_hi = 0, pr_lo = 0, p2_hi = 0, p2_lo = 0, any = 0;
    for (int j = 0; j < kBlock; ++j) {
      const core::MassParts p = core::mass_parts(e[j]);
      sum_hi += p.hi;
      sum_lo += p.lo;
      if (kProbeOn) {
        const uint32_t in = e[j] >= kProbe ? ~0u : 0u;
        pr_hi += p.hi & in;
        pr_lo += p.lo & in;
        const uint32_t in2 = e[j] >= kProbe2 ? ~0u : 0u;
        p2_hi += p.hi & in2;
        p2_lo += p.lo & in2;
        any |= e[j] >= kProbeLow ? 1u : 0u;
      }
    }
    const uint64_t bm = (static_cast<uint64_t>(sum_hi) << 20) + sum_lo;
    block_w[i0 / kBlock] = bm;
    total += bm;
    if (kProbeOn) {
      probe_mass += (static_cast<uint64_t>(pr_hi) << 20) + pr_lo;
      probe_mass2 += (static_cast<uint64_t>(p2_hi) << 20) + p2_lo;
      if (any) {
        // candidate flags (one vectorised compare), then the set ones 8 at a time: on a peaked
        // row a block holds a few candidates, so a group of 8 without one costs a test
        uint8_t flag[kBlock];
        for (int j = 0; j < kBlock; ++j) flag[j] = e[j] >= kProbeLow ? 1 : 0;
        for (int g = 0; g < kBlock; g += 8) {
          uint64_t f;
          std::memcpy(&f, flag + g, 8);
          while (f != 0) {
            const int j = g + __builtin_ctzll(f) / 8;
            ids[n] = static_cast<int32_t>(i0 + j);
            w[n] = core::mass_of(e[j]);
            ++n;
            f &= f - 1;
          }
        }
      }
    }
  });
  if (kProbeOn) *probe = ProbeResult{probe_mass, probe_mass2, n};
  return total;
}

// No filter: draw over every valid token without a candidate list. One pass of likelihoods
// keeps each block's weight (in block_w, ceil(v / kBlock) entries); the draw then finds the
// block that holds t from those sums and recomputes only that block's weights. inv_t finite.
RowResult sample_unfiltered(const uint32_t* keys, int64_t v, const RowStats& st, float inv_t,
                            uint64_t u, uint64_t* block_w) {
  const uint32_t lo = core::kKeyNegInf + 1;
  const uint64_t total =
      inv_t == 1.0f
          ? unfiltered_pass<true, false>(keys, v, st.m, inv_t, block_w, nullptr, nullptr, nullptr)
          : unfiltered_pass<false, false>(keys, v, st.m, inv_t, block_w, nullptr, nullptr, nullptr);
  const uint64_t t = core::scale_draw(u, total);
  RowResult res;
  res.kept = static_cast<int32_t>(st.n_valid);
  uint64_t acc = 0;
  int64_t blk = 0;
  while (acc + block_w[blk] <= t) acc += block_w[blk++];  // t < total: stops in range
  const int64_t i0 = blk * kBlock;
  for (int64_t i = i0; i < i0 + kBlock && i < v; ++i) {
    if (keys[i] < lo) continue;
    acc += core::mass_of(core::rel_likelihood(value_of(keys[i]), st.m, inv_t));
    if (acc > t) {
      res.token = static_cast<int32_t>(i);
      break;
    }
  }
  return res;  // the block's weights sum past t, so a token was found
}

RowResult top_p_and_draw(const Scratch& s, int64_t n, uint64_t target, const core::RowSettings& rs,
                         uint64_t u);
int64_t candidates(const Scratch& s, int64_t v, const RowStats& st, const core::RowSettings& rs,
                   float inv_t, uint64_t* total_out);

// The general path: T > 0 and a finite maximum m.
RowResult sample_tempered(const Scratch& s, int64_t v, const RowStats& st,
                          const core::RowSettings& rs, uint64_t u) {
  const uint32_t* keys = s.keys;
  const float inv_t = core::div_rn(1.0f, rs.temperature);
  const bool use_k = rs.top_k > 0 && rs.top_k < st.n_valid;
  if (!use_k && rs.min_p == 0.0f && core::is_finite(inv_t)) {
    if (rs.top_p >= 1.0f) return sample_unfiltered(keys, v, st, inv_t, u, s.block_w);
    // top-p alone: the probe's candidates, where they hold the target (kProbe)
    ProbeResult pr;
    const uint64_t total =
        inv_t == 1.0f
            ? unfiltered_pass<true, true>(keys, v, st.m, inv_t, s.block_w, &pr, s.ids, s.w)
            : unfiltered_pass<false, true>(keys, v, st.m, inv_t, s.block_w, &pr, s.ids, s.w);
    const uint64_t target = core::ceil_fraction(rs.top_p, total);
    if (target <= pr.mass2) {  // the narrower probe's candidates, compacted in place
      int64_t n2 = 0;
      for (int64_t j = 0; j < pr.n; ++j) {
        s.ids[n2] = s.ids[j];
        s.w[n2] = s.w[j];
        n2 += s.w[j] >= kProbe2LowWeight;
      }
      return top_p_and_draw(s, n2, target, rs, u);
    }
    if (target <= pr.mass) return top_p_and_draw(s, pr.n, target, rs, u);
  }

  uint64_t total = 0;
  const int64_t n = candidates(s, v, st, rs, inv_t, &total);
  return top_p_and_draw(s, n, rs.top_p < 1.0f ? core::ceil_fraction(rs.top_p, total) : 0, rs, u);
}

// The candidates of the general path (T > 0, a finite maximum m) into s.ids / s.w in token-id
// order: every valid token with a key at or above the top-k threshold and e >= min_p, with its
// weight; *total gets their weight.
int64_t candidates(const Scratch& s, int64_t v, const RowStats& st, const core::RowSettings& rs,
                   float inv_t, uint64_t* total_out) {
  const uint32_t* keys = s.keys;
  const bool use_k = rs.top_k > 0 && rs.top_k < st.n_valid;
  // top-k threshold on the keys
  uint32_t lo = core::kKeyNegInf + 1;
  if (use_k) {
    if (rs.top_k <= kHeapTopK) {
      lo = st.kth_key;
    } else {
      lo = select_key_by_mass(
          v, [&](int64_t i) { return keys[i]; },
          [&](int64_t i) { return static_cast<uint64_t>(keys[i] > core::kKeyNegInf); },
          static_cast<uint64_t>(rs.top_k), s.hist, s.sel);
    }
  }

  // min-p as a key threshold too: blocks entirely below it are skipped without computing a
  // likelihood (min_p_floor_key)
  bool skip_blocks = use_k;
  if (rs.min_p > 0.0f) {
    const uint32_t lp = min_p_floor_key(st.m, inv_t, rs.min_p);
    if (lp > lo) {
      lo = lp;
      skip_blocks = true;
    }
  }

  // candidates in token-id order: key >= lo, e >= min_p
  int64_t n = 0;
  uint64_t total = 0;
  float e[kBlock];
  for_each_block(keys, v, [&](int64_t i0, const uint32_t* b) {
    if (skip_blocks && !any_at_least(b, lo)) return;
    block_likelihoods(b, lo, st.m, inv_t, e);
    for (int j = 0; j < kBlock; ++j) {
      const bool c = e[j] >= rs.min_p;  // false for keys below lo (e = -1), padding included
      const uint64_t w = c ? core::mass_of(e[j]) : 0;
      s.ids[n] =
          static_cast<int32_t>(i0 + j);  // branch-free compaction (ids/w have V + kBlock slots)
      s.w[n] = w;
      total += w;
      n += c;
    }
  });
  *total_out = total;
  return n;
}

// The candidates s.ids / s.w [0, n) (token-id order; every token that can be kept, and above
// the top-p threshold every token): the top-p threshold by mass (the largest key whose
// candidates at or above it weigh at least target; none where target is 0), then the draw by
// running weight in token-id order over the candidates at or above it.
// The top-p threshold over the candidates s.ids / s.w [0, n): the largest key whose candidates
// at or above it weigh at least target (0, keeping every candidate, where top-p is off).
uint32_t top_p_threshold(const Scratch& s, int64_t n, uint64_t target,
                         const core::RowSettings& rs) {
  const uint32_t* keys = s.keys;
  uint32_t tau = 0;
  if (rs.top_p < 1.0f) {
    if (n <= kSmallSort) {
      for (int64_t j = 0; j < n; ++j)
        s.sort_buf[j] = (static_cast<uint64_t>(keys[s.ids[j]]) << 32) | static_cast<uint64_t>(j);
      std::sort(s.sort_buf, s.sort_buf + n, std::greater<uint64_t>());
      uint64_t acc = 0;
      for (int64_t j = 0; j < n; ++j) {
        acc += s.w[s.sort_buf[j] & 0xffffffffu];
        if (acc >= target) {
          tau = static_cast<uint32_t>(s.sort_buf[j] >> 32);
          break;
        }
      }
    } else {
      tau = select_key_by_mass(
          n, [&](int64_t j) { return keys[s.ids[j]]; }, [&](int64_t j) { return s.w[j]; }, target,
          s.hist, s.sel);
    }
  }
  return tau;
}

RowResult top_p_and_draw(const Scratch& s, int64_t n, uint64_t target, const core::RowSettings& rs,
                         uint64_t u) {
  const uint32_t* keys = s.keys;
  const uint32_t tau = top_p_threshold(s, n, target, rs);
  // kept set = candidates with key >= tau; draw by running weight in token-id order
  uint64_t kept_total = 0;
  int64_t kept = 0;
  for (int64_t j = 0; j < n; ++j) {
    const bool keep = keys[s.ids[j]] >= tau;
    kept_total += keep ? s.w[j] : 0;
    kept += keep;
  }
  RowResult res;
  res.kept = static_cast<int32_t>(kept);
  const uint64_t t = core::scale_draw(u, kept_total);
  uint64_t acc = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (keys[s.ids[j]] < tau) continue;
    acc += s.w[j];
    if (acc > t) {
      res.token = s.ids[j];
      break;
    }
  }
  return res;
}

// Logprob of a token with key `key` (section 5 of the contract).
inline float logprob_at(uint32_t key, const RowStats& st, double log_norm) {
  if (st.n_posinf > 0)
    return key == core::kKeyPosInf ? core::uniform_logprob(static_cast<uint64_t>(st.n_posinf))
                                   : neg_inf();
  return core::logprob_of(value_of(key), st.m, log_norm);
}

// Top-n processed logits, highest first, ties to the lower id.
void top_n(const uint32_t* keys, int64_t v, int n, int32_t* ids_out, float* lp_out,
           const RowStats& st, double log_norm) {
  // entry = key << 32 | ~id: a larger entry is a higher key, or an equal key and a lower id
  uint64_t heap[kMaxTopLogprobs];
  int size = 0;
  const auto entry = [](uint32_t key, int64_t i) {
    return (static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(i));
  };
  int64_t i = 0;
  for (; i < v && size < n; ++i) {
    if (keys[i] == core::kKeyNegInf) continue;
    heap[size++] = entry(keys[i], i);
    std::push_heap(heap, heap + size, std::greater<uint64_t>());
  }
  for (; i < v; ++i) {
    // equal keys arrive with higher ids, so only a strictly higher key can enter
    if (i % kBlock == 0 && i + kBlock <= v &&
        !any_at_least(keys + i, static_cast<uint32_t>(heap[0] >> 32) + 1)) {
      i += kBlock - 1;
      continue;
    }
    if (keys[i] <= static_cast<uint32_t>(heap[0] >> 32)) continue;
    std::pop_heap(heap, heap + size, std::greater<uint64_t>());
    heap[size - 1] = entry(keys[i], i);
    std::push_heap(heap, heap + size, std::greater<uint64_t>());
  }
  std::sort(heap, heap + size, std::greater<uint64_t>());
  for (int j = 0; j < n; ++j) {
    if (j < size) {
      ids_out[j] = static_cast<int32_t>(~static_cast<uint32_t>(heap[j]));
      lp_out[j] = logprob_at(static_cast<uint32_t>(heap[j] >> 32), st, log_norm);
    } else {
      ids_out[j] = -1;
      lp_out[j] = neg_inf();
    }
  }
}

void write_row(const Outputs& out, int64_t r, int top_n_count, const RowResult& res) {
  out.tokens[r] = res.token;
  out.status[r] = res.status;
  if (out.kept) out.kept[r] = res.kept;
  if (res.token < 0) {
    if (out.logprob) out.logprob[r] = neg_inf();
    for (int j = 0; j < top_n_count; ++j) {
      out.top_ids[r * top_n_count + j] = -1;
      out.top_logprobs[r * top_n_count + j] = neg_inf();
    }
  }
}

// Steps 1-5 of the contract for row r into s.keys, with the row's statistics: kRowOk, or the
// row's status (a bad parameter or token id, or kRowEmpty), when nothing is left to draw.
int32_t prepare_row(const Scratch& s, const Request& req, int64_t r, int64_t stride,
                    int64_t mask_words, const core::RowSettings& rs, RowStats* st) {
  const int64_t v = req.logits.vocab;
  int32_t status = core::validate_row_settings(rs);
  if (status == kRowOk &&
      !(sparse_ids_ok(req.logit_bias, r, v) && sparse_ids_ok(req.prompt_tokens, r, v) &&
        sparse_ids_ok(req.output_tokens, r, v)))
    status = kRowBadTokenId;
  if (status != kRowOk) return status;
  const RowSource src = row_source(req, r, stride, mask_words);
  const bool sparse =
      req.logit_bias.offsets || req.prompt_tokens.offsets || req.output_tokens.offsets;
  const int heap_k = rs.temperature > 0.0f ? rs.top_k : 0;
  if (sparse) {
    load_keys(s.keys, src, v);
    apply_sparse(s.keys, s.tags, req, r, rs);
    *st = scan_keys(s.keys, v, heap_k);
  } else {
    *st = load_and_scan(s.keys, src, v, heap_k);
  }
  return st->n_valid == 0 ? kRowEmpty : kRowOk;
}

void sample_row_impl(const Scratch& s, const Request& req, const Outputs& out, int64_t r,
                     int64_t stride, int64_t mask_words) {
  const int64_t v = req.logits.vocab;
  const int n_top = req.top_logprobs;
  RowResult res;
  const core::RowSettings rs = core::load_row_settings(req.params, r);
  RowStats st;
  res.status = prepare_row(s, req, r, stride, mask_words, rs, &st);
  if (res.status != kRowOk) {
    write_row(out, r, n_top, res);
    return;
  }

  const uint64_t u = core::row_uniform64(rs.seed, rs.step, rs.substream);
  if (rs.temperature == 0.0f) {
    res.token = static_cast<int32_t>(st.argmax);
    res.kept = 1;
  } else if (st.n_posinf > 0) {
    // uniform over the +inf tokens: the (t+1)-th one in id order
    const uint64_t t = core::scale_draw(u, static_cast<uint64_t>(st.n_posinf));
    uint64_t seen = 0;
    for (int64_t i = 0; i < v; ++i) {
      if (s.keys[i] == core::kKeyPosInf && seen++ == t) {
        res.token = static_cast<int32_t>(i);
        break;
      }
    }
    res.kept = static_cast<int32_t>(st.n_posinf);
  } else {
    res = sample_tempered(s, v, st, rs, u);
  }
  write_row(out, r, n_top, res);

  if (out.logprob || n_top > 0) {
    double log_norm = 0.0;
    if (st.n_posinf == 0)
      log_norm = core::log_normaliser(unfiltered_pass<true, false>(  // (T = 1: section 5)
          s.keys, v, st.m, 1.0f, s.block_w, nullptr, nullptr, nullptr));
    if (out.logprob) out.logprob[r] = logprob_at(s.keys[res.token], st, log_norm);
    if (n_top > 0)
      top_n(s.keys, v, n_top, out.top_ids + r * n_top, out.top_logprobs + r * n_top, st, log_norm);
  }
}

int32_t row_distribution_impl(const Scratch& s, const Request& req, int64_t r, int64_t stride,
                              int64_t mask_words, int64_t* n_out, uint64_t* total_out) {
  const int64_t v = req.logits.vocab;
  const core::RowSettings rs = core::load_row_settings(req.params, r);
  RowStats st;
  *n_out = 0;
  *total_out = 0;
  const int32_t status = prepare_row(s, req, r, stride, mask_words, rs, &st);
  if (status != kRowOk) return status;
  int64_t n = 0;
  uint64_t total = 0;
  if (rs.temperature == 0.0f) {  // section 3: the lowest id of the maximum, weight 1
    s.ids[0] = static_cast<int32_t>(st.argmax);
    s.w[0] = 1;
    n = 1;
    total = 1;
  } else if (st.n_posinf > 0) {  // the +inf tokens, weight 1 each
    for (int64_t i = 0; i < v; ++i) {
      if (s.keys[i] != core::kKeyPosInf) continue;
      s.ids[n] = static_cast<int32_t>(i);
      s.w[n++] = 1;
    }
    total = static_cast<uint64_t>(n);
  } else {
    const float inv_t = core::div_rn(1.0f, rs.temperature);
    uint64_t all = 0;
    const int64_t c = candidates(s, v, st, rs, inv_t, &all);
    const uint32_t tau =
        top_p_threshold(s, c, rs.top_p < 1.0f ? core::ceil_fraction(rs.top_p, all) : 0, rs);
    for (int64_t j = 0; j < c; ++j) {  // the kept set, compacted in place (token-id order)
      if (s.keys[s.ids[j]] < tau) continue;
      s.ids[n] = s.ids[j];
      s.w[n] = s.w[j];
      total += s.w[n++];
    }
  }
  *n_out = n;
  *total_out = total;
  return kRowOk;
}

// Section 5's logprob of `token` in the row whose processed keys are in s.keys (as
// row_distribution left them).
float row_logprob_impl(const Scratch& s, int64_t v, int32_t token) {
  const RowStats st = scan_keys(s.keys, v, 0);
  double log_norm = 0.0;
  if (st.n_posinf == 0)
    log_norm = core::log_normaliser(
        unfiltered_pass<true, false>(s.keys, v, st.m, 1.0f, s.block_w, nullptr, nullptr, nullptr));
  return logprob_at(s.keys[token], st, log_norm);
}

}  // namespace

void sample_row(const Scratch& s, const Request& req, const Outputs& out, int64_t r, int64_t stride,
                int64_t mask_words) {
  sample_row_impl(s, req, out, r, stride, mask_words);
}

int32_t row_distribution(const Scratch& s, const Request& req, int64_t r, int64_t stride,
                         int64_t mask_words, int64_t* n, uint64_t* total) {
  return row_distribution_impl(s, req, r, stride, mask_words, n, total);
}

float row_logprob(const Scratch& s, int64_t v, int32_t token) {
  return row_logprob_impl(s, v, token);
}

}  // namespace lmsample::cpu::LMS_CPU_ISA

// The CPU backend's per-row work, compiled once per instruction-set level (baseline and, on
// x86-64, AVX2) from the same source: every operation is an exact IEEE or integer operation and
// nothing is contracted, so both builds return the same bits; the faster one is picked at run time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lmsample/lmsample.hpp"

namespace lmsample::cpu {

constexpr int kHeapTopK = 1024;   // top-k up to this uses a bounded heap scan, else radix select
constexpr int kSmallSort = 2048;  // top-p over at most this many candidates sorts them
constexpr size_t kAlign = 64;
constexpr int kBlock =
    64;  // keys per vectorised block (also two bitmask words: rows.cpp relies on it)

inline size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Per-thread scratch, carved from the caller's workspace. The row is held as order keys
// (core::order_key of the canonical processed logits): every comparison is an integer one.
struct Scratch {
  uint32_t* keys;      // V processed logits as keys
  int32_t* ids;        // V candidate token ids
  uint64_t* w;         // V candidate weights
  uint32_t* tags;      // V penalty bookkeeping, all zero between rows
  uint64_t* sort_buf;  // kSmallSort (key << 32 | index) entries
  uint64_t* hist;      // 2048 radix buckets
  int32_t* sel;        // V + 1 entry indices (the radix select's entries after its first round)
  uint64_t* block_w;   // ceil(V / kBlock) weights of kBlock-token blocks (the unfiltered passes)

  static size_t bytes(int64_t v) {
    const auto n = static_cast<size_t>(v);
    return align_up(n * sizeof(uint32_t)) + align_up((n + kBlock) * sizeof(int32_t)) +
           align_up((n + kBlock) * sizeof(uint64_t)) + align_up(n * sizeof(uint32_t)) +
           align_up(kSmallSort * sizeof(uint64_t)) + align_up(2048 * sizeof(uint64_t)) +
           align_up((n + 1) * sizeof(int32_t)) + align_up((n / kBlock + 1) * sizeof(uint64_t));
  }
  static Scratch carve(char* base, int64_t v) {
    const auto n = static_cast<size_t>(v);
    Scratch s{};
    s.keys = reinterpret_cast<uint32_t*>(base);
    base += align_up(n * sizeof(uint32_t));
    s.ids = reinterpret_cast<int32_t*>(base);
    base += align_up((n + kBlock) * sizeof(int32_t));
    s.w = reinterpret_cast<uint64_t*>(base);
    base += align_up((n + kBlock) * sizeof(uint64_t));
    s.tags = reinterpret_cast<uint32_t*>(base);
    base += align_up(n * sizeof(uint32_t));
    s.sort_buf = reinterpret_cast<uint64_t*>(base);
    base += align_up(kSmallSort * sizeof(uint64_t));
    s.hist = reinterpret_cast<uint64_t*>(base);
    base += align_up(2048 * sizeof(uint64_t));
    s.sel = reinterpret_cast<int32_t*>(base);
    base += align_up((n + 1) * sizeof(int32_t));
    s.block_w = reinterpret_cast<uint64_t*>(base);
    return s;
  }
};

//! Samples row r into `out` using the thread's scratch (one instruction-set build each).
//! row_distribution: the contract's kept set of row r instead of a draw (steps 1-9, section 3's
//! special rows): s.ids / s.w [0, *n) in increasing token id with each token's fixed-point
//! weight (1 for a greedy row's token and for each +inf token), *total their sum; returns kRowOk
//! or the row's status (then *n = 0). row_logprob: section 5's logprob of a token of the row
//! row_distribution left in s.keys.
namespace baseline {
void sample_row(const Scratch& s, const Request& req, const Outputs& out, int64_t r, int64_t stride,
                int64_t mask_words);
int32_t row_distribution(const Scratch& s, const Request& req, int64_t r, int64_t stride,
                         int64_t mask_words, int64_t* n, uint64_t* total);
float row_logprob(const Scratch& s, int64_t v, int32_t token);
}  // namespace baseline
namespace avx2 {
void sample_row(const Scratch& s, const Request& req, const Outputs& out, int64_t r, int64_t stride,
                int64_t mask_words);
int32_t row_distribution(const Scratch& s, const Request& req, int64_t r, int64_t stride,
                         int64_t mask_words, int64_t* n, uint64_t* total);
float row_logprob(const Scratch& s, int64_t v, int32_t token);
}  // namespace avx2

//! The instruction-set build of row_distribution the CPU backend runs here (sample_cpu.cpp).
using DistributionFn = int32_t (*)(const Scratch&, const Request&, int64_t, int64_t, int64_t,
                                   int64_t*, uint64_t*);
DistributionFn row_distribution_fn();
using LogprobFn = float (*)(const Scratch&, int64_t, int32_t);
LogprobFn row_logprob_fn();

}  // namespace lmsample::cpu

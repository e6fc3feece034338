// A host emulation of one GPU thread block, for tests only (LMS_SIMT_EMULATION): every GPU thread
// is a std::thread, __syncthreads is a block barrier, and warp shuffles and ballots exchange
// values through memory between two warp barriers. The warp size is a compile-time choice
// (LMS_SIMT_WARP = 32 or 64), so the block-level code of src/gpu/ can be run on the CPU for both
// wave sizes (tests/simt/). port.hpp includes this header in place of a GPU vendor's.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#ifndef LMS_SIMT_WARP
#define LMS_SIMT_WARP 32
#endif

#define __device__
#define __host__
#define __forceinline__ inline

namespace lms_simt {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(m_);
    const int gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0, gen_ = 0;
};

struct Block {
  explicit Block(int threads) : block(threads), words(static_cast<size_t>(threads)) {
    for (int w = 0; w < threads / LMS_SIMT_WARP; ++w)
      warps.push_back(std::make_unique<Barrier>(LMS_SIMT_WARP));
  }
  Barrier block;
  std::vector<std::unique_ptr<Barrier>> warps;
  std::vector<uint32_t> words;  // one exchange word per thread
};

inline thread_local Dim3 thread_idx;
inline thread_local Block* block = nullptr;

//! Runs f() once per thread of a block of `threads` threads (a multiple of the warp size).
inline void launch_block(int threads, const std::function<void()>& f) {
  Block b(threads);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&b, &f, t] {
      thread_idx.x = static_cast<unsigned>(t);
      block = &b;
      f();
    });
  }
  for (std::thread& th : pool) th.join();
}

inline int lane() { return static_cast<int>(thread_idx.x) % LMS_SIMT_WARP; }
inline Barrier& warp_barrier() { return *block->warps[thread_idx.x / LMS_SIMT_WARP]; }

//! Word of lane `src` of this warp (every lane of the warp calls it together).
inline uint32_t shfl_word(uint32_t v, int src) {
  const unsigned base = thread_idx.x - static_cast<unsigned>(lane());
  block->words[thread_idx.x] = v;
  warp_barrier().arrive_and_wait();
  const int from = src >= 0 && src < LMS_SIMT_WARP ? src : lane();
  const uint32_t r = block->words[base + static_cast<unsigned>(from)];
  warp_barrier().arrive_and_wait();
  return r;
}

inline uint64_t ballot(bool pred) {
  const unsigned base = thread_idx.x - static_cast<unsigned>(lane());
  block->words[thread_idx.x] = pred ? 1u : 0u;
  warp_barrier().arrive_and_wait();
  uint64_t bits = 0;
  for (int l = 0; l < LMS_SIMT_WARP; ++l)
    bits |= static_cast<uint64_t>(block->words[base + static_cast<unsigned>(l)]) << l;
  warp_barrier().arrive_and_wait();
  return bits;
}

inline void sync_warp() { warp_barrier().arrive_and_wait(); }

}  // namespace lms_simt

#define threadIdx (::lms_simt::thread_idx)
inline void __syncthreads() { ::lms_simt::block->block.arrive_and_wait(); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

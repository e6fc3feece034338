// Turning .npy arrays into lmsample inputs, with messages that say what is wrong and where.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lmsample/lmsample.hpp"
#include "npy.hpp"

namespace lmsample::tool {

//! Logits loaded from a .npy file: [B, V] (or [V], meaning B = 1).
struct LogitsData {
  NpyArray array;
  DType dtype = DType::kFloat32;
  int64_t batch = 0;
  int64_t vocab = 0;
  Logits view() const {
    Logits l;
    l.data = array.data();
    l.dtype = dtype;
    l.batch = batch;
    l.vocab = vocab;
    l.row_stride = vocab;
    return l;
  }
  //! Gives rows [r0, r0 + n) of a mapped file back to the kernel (they are read again if used).
  void release(int64_t r0, int64_t n) const;
};

//! Checks an array as logits. float32 and float16 are used as stored; uint16 (or 2-byte void)
//! only with `bf16` set, as bfloat16 bit patterns. Throws NpyError naming array.source.
LogitsData logits_from_npy(NpyArray array, bool bf16);
//! read_npy + logits_from_npy.
LogitsData load_logits(const std::string& path, bool bf16);

//! A per-row parameter array: a 0-d array (one value for every row) or a 1-D array of `batch`
//! values. `what` names the option in messages (e.g. "--top-p-npy"). Throws NpyError.
std::vector<float> float_param(const NpyArray& a, const std::string& what, int64_t batch);
//! Integer parameters: the array must hold integers (or bool) in the target type's range.
std::vector<int32_t> int32_param(const NpyArray& a, const std::string& what, int64_t batch);
std::vector<uint32_t> uint32_param(const NpyArray& a, const std::string& what, int64_t batch);
std::vector<uint64_t> uint64_param(const NpyArray& a, const std::string& what, int64_t batch);

//! Token histories in CSR form.
struct TokenLists {
  std::vector<int64_t> offsets;  //!< batch + 1 entries
  std::vector<int32_t> tokens;
};
//! A history array: integers, [B, L] (row r's tokens; negative entries are padding and skipped)
//! or [L] when B = 1. Token ids >= V are passed on (the library reports kRowBadTokenId).
TokenLists token_lists(const NpyArray& a, const std::string& what, int64_t batch);

//! An allowed-token bitmask: int32 or uint32, [B, W] (or [W] when B = 1) with W >= ceil(V / 32);
//! bit t % 32 of word t / 32 set = token t allowed (xgrammar's layout).
struct Bitmask {
  std::vector<uint32_t> words;
  int64_t row_words = 0;
};
Bitmask bitmask_from_npy(const NpyArray& a, const std::string& what, int64_t batch, int64_t vocab);

}  // namespace lmsample::tool

// See inputs.hpp.
#include "inputs.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <utility>

namespace lmsample::tool {
namespace {

[[noreturn]] void fail(const NpyArray& a, const std::string& what, const std::string& msg) {
  throw NpyError(a.source + ": " + (what.empty() ? "" : what + ": ") + msg);
}

// Checks that `a` is 0-d or 1-D of `batch` values and returns how to index it (0 = broadcast).
int64_t param_step(const NpyArray& a, const std::string& what, int64_t batch) {
  if (a.rank() == 0) return 0;
  if (a.rank() == 1 && a.shape()[0] == batch) return 1;
  fail(a, what,
       "expected a 0-d array (one value for every row) or a 1-D array of " + std::to_string(batch) +
           " values (one per row of the logits), got shape " + shape_string(a.shape()));
}

// Signed integer at element i, range-checked to [lo, hi].
int64_t checked_integer(const NpyArray& a, const std::string& what, int64_t i, int64_t lo,
                        uint64_t hi) {
  bool neg = false;
  uint64_t mag = 0;
  if (!a.integer_at(i, &neg, &mag))
    fail(a, what, std::string("expected an integer array, got ") + npy_type_name(a.type()));
  const auto value_text = [&] { return (neg ? "-" : "") + std::to_string(mag); };
  if (neg) {
    const uint64_t lim = lo < 0 ? uint64_t{0} - static_cast<uint64_t>(lo) : 0;
    if (mag > lim)
      fail(a, what,
           "element " + std::to_string(i) + " = " + value_text() + " is below " +
               std::to_string(lo));
    return mag == 0 ? 0 : static_cast<int64_t>(uint64_t{0} - mag);
  }
  if (mag > hi)
    fail(a, what,
         "element " + std::to_string(i) + " = " + value_text() + " is above " + std::to_string(hi));
  return static_cast<int64_t>(mag);
}

}  // namespace

void LogitsData::release(int64_t r0, int64_t n) const {
  if (!array.mapped || n <= 0) return;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const size_t row = static_cast<size_t>(vocab) * (dtype == DType::kFloat32 ? 4 : 2);
  const auto begin = reinterpret_cast<uintptr_t>(array.mapped) + static_cast<size_t>(r0) * row;
  const uintptr_t end = begin + static_cast<size_t>(n) * row;
  const uintptr_t b = (begin + page - 1) / page * page, e = end / page * page;
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

LogitsData logits_from_npy(NpyArray array, bool bf16) {
  LogitsData d;
  const std::string what = "logits";
  const NpyArray& a = array;
  if (a.rank() == 2) {
    d.batch = a.shape()[0];
    d.vocab = a.shape()[1];
  } else if (a.rank() == 1) {
    d.batch = 1;
    d.vocab = a.shape()[0];
  } else {
    fail(a, what,
         "expected a 2-D array [batch, vocab] (or 1-D [vocab] for one row), got shape " +
             shape_string(a.shape()) + (a.rank() > 2 ? "; reshape it to [-1, vocab] first" : ""));
  }
  switch (a.type()) {
    case NpyType::kFloat32:
      if (bf16) fail(a, what, "--bf16 was given but the logits are float32");
      d.dtype = DType::kFloat32;
      break;
    case NpyType::kFloat16:
      if (bf16) fail(a, what, "--bf16 was given but the logits are float16");
      d.dtype = DType::kFloat16;
      break;
    case NpyType::kUInt16:
    case NpyType::kVoid2:
      if (!bf16)
        fail(a, what,
             std::string("the logits are ") + npy_type_name(a.type()) +
                 "; if they hold bfloat16 bit patterns, pass --bf16");
      d.dtype = DType::kBFloat16;
      break;
    case NpyType::kFloat64:
      fail(a, what,
           "float64 logits are not supported (lmsample samples fp32, bf16 and fp16 logits exactly "
           "as stored); save them as float32, e.g. np.save(f, a.astype(np.float32))");
    default:
      fail(a, what,
           std::string("unsupported dtype ") + npy_type_name(a.type()) +
               " for logits (expected float32 '<f4', float16 '<f2', or bfloat16 stored as "
               "uint16 '<u2' with --bf16)");
  }
  if (d.vocab < 1)
    fail(a, what, "the vocabulary size is 0 (shape " + shape_string(a.shape()) + ")");
  if (d.vocab > kMaxVocab)
    fail(a, what,
         "the vocabulary size " + std::to_string(d.vocab) + " exceeds lmsample's maximum " +
             std::to_string(kMaxVocab) + " (shape " + shape_string(a.shape()) + ")");
  d.array = std::move(array);
  return d;
}

LogitsData load_logits(const std::string& path, bool bf16) {
  return logits_from_npy(read_npy(path), bf16);
}

std::vector<float> float_param(const NpyArray& a, const std::string& what, int64_t batch) {
  const int64_t step = param_step(a, what, batch);
  if (a.type() == NpyType::kVoid2)
    fail(a, what, "expected a numeric array, got 2-byte opaque values");
  std::vector<float> out(static_cast<size_t>(batch));
  for (int64_t r = 0; r < batch; ++r) {
    const int64_t i = r * step;
    if (a.type() == NpyType::kFloat32) {
      float f;
      std::memcpy(&f, static_cast<const char*>(a.data()) + i * 4, 4);
      out[static_cast<size_t>(r)] = f;  // bit exact, NaN payloads included
    } else {
      out[static_cast<size_t>(r)] = static_cast<float>(a.as_double(i));
    }
  }
  return out;
}

std::vector<int32_t> int32_param(const NpyArray& a, const std::string& what, int64_t batch) {
  const int64_t step = param_step(a, what, batch);
  std::vector<int32_t> out(static_cast<size_t>(batch));
  for (int64_t r = 0; r < batch; ++r)
    out[static_cast<size_t>(r)] = static_cast<int32_t>(
        checked_integer(a, what, r * step, std::numeric_limits<int32_t>::min(),
                        static_cast<uint64_t>(std::numeric_limits<int32_t>::max())));
  return out;
}

std::vector<uint32_t> uint32_param(const NpyArray& a, const std::string& what, int64_t batch) {
  const int64_t step = param_step(a, what, batch);
  std::vector<uint32_t> out(static_cast<size_t>(batch));
  for (int64_t r = 0; r < batch; ++r)
    out[static_cast<size_t>(r)] = static_cast<uint32_t>(
        checked_integer(a, what, r * step, 0, std::numeric_limits<uint32_t>::max()));
  return out;
}

std::vector<uint64_t> uint64_param(const NpyArray& a, const std::string& what, int64_t batch) {
  const int64_t step = param_step(a, what, batch);
  std::vector<uint64_t> out(static_cast<size_t>(batch));
  for (int64_t r = 0; r < batch; ++r) {
    bool neg = false;
    uint64_t mag = 0;
    if (!a.integer_at(r * step, &neg, &mag))
      fail(a, what, std::string("expected an integer array, got ") + npy_type_name(a.type()));
    if (neg && mag != 0)
      fail(a, what,
           "element " + std::to_string(r * step) + " = -" + std::to_string(mag) + " is negative");
    out[static_cast<size_t>(r)] = mag;
  }
  return out;
}

TokenLists token_lists(const NpyArray& a, const std::string& what, int64_t batch) {
  int64_t len = 0;
  if (a.rank() == 2 && a.shape()[0] == batch) {
    len = a.shape()[1];
  } else if (a.rank() == 1 && batch == 1) {
    len = a.shape()[0];
  } else {
    fail(a, what,
         "expected a 2-D integer array [" + std::to_string(batch) +
             ", L] (one row of token ids per logits row, negative ids = padding)" +
             (batch == 1 ? " or a 1-D array [L]" : "") + ", got shape " + shape_string(a.shape()));
  }
  if (!npy_is_integer(a.type()))
    fail(a, what, std::string("expected an integer array, got ") + npy_type_name(a.type()));
  TokenLists t;
  t.offsets.reserve(static_cast<size_t>(batch) + 1);
  t.offsets.push_back(0);
  for (int64_t r = 0; r < batch; ++r) {
    for (int64_t j = 0; j < len; ++j) {
      bool neg = false;
      uint64_t mag = 0;
      a.integer_at(r * len + j, &neg, &mag);
      if (neg) continue;  // padding
      if (mag > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
        fail(a, what,
             "token id " + std::to_string(mag) + " (row " + std::to_string(r) +
                 ") does not fit in int32");
      t.tokens.push_back(static_cast<int32_t>(mag));
    }
    t.offsets.push_back(static_cast<int64_t>(t.tokens.size()));
  }
  return t;
}

Bitmask bitmask_from_npy(const NpyArray& a, const std::string& what, int64_t batch, int64_t vocab) {
  const int64_t need = (vocab + 31) / 32;
  int64_t words = 0;
  if (a.rank() == 2 && a.shape()[0] == batch) {
    words = a.shape()[1];
  } else if (a.rank() == 1 && batch == 1) {
    words = a.shape()[0];
  } else {
    fail(a, what,
         "expected a 2-D array [" + std::to_string(batch) + ", " + std::to_string(need) +
             "] of 32-bit words, got shape " + shape_string(a.shape()));
  }
  if (a.type() != NpyType::kInt32 && a.type() != NpyType::kUInt32)
    fail(a, what, std::string("expected int32 or uint32 words, got ") + npy_type_name(a.type()));
  if (words < need)
    fail(a, what,
         "rows have " + std::to_string(words) + " words but the vocabulary of " +
             std::to_string(vocab) + " tokens needs ceil(V / 32) = " + std::to_string(need));
  Bitmask m;
  m.row_words = words;
  m.words.resize(static_cast<size_t>(batch * words));
  if (!m.words.empty()) std::memcpy(m.words.data(), a.data(), m.words.size() * sizeof(uint32_t));
  return m;
}

}  // namespace lmsample::tool

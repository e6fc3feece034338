// The .npy reader/writer and the input checks of the `lmsample` tool (tools/lmsample): every
// malformed file must give an NpyError whose message names the file and says what is wrong, and
// no input may crash the reader.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "inputs.hpp"
#include "npy.hpp"
#include "synth.hpp"
#include "temp_dir_test.hpp"
#include "verify.hpp"

namespace lmsample::tool {
namespace {

namespace fs = std::filesystem;

class Npy : public lmstest::TempDirTest {
 protected:
  Npy() : TempDirTest("lmsample_test_npy_") {}
  std::string write_bytes(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  // A file with the given header dict text (version 1.0) followed by `data` bytes.
  std::string write_raw(const std::string& name, const std::string& dict, const std::string& data,
                        int major = 1) const {
    std::string h = dict;
    const size_t prefix = major == 1 ? 10 : 12;
    while ((prefix + h.size() + 1) % 64) h += ' ';
    h += '\n';
    std::string bytes = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
    if (major == 1) {
      bytes += static_cast<char>(h.size() & 0xff);
      bytes += static_cast<char>(h.size() >> 8);
    } else {
      for (int b = 0; b < 4; ++b) bytes += static_cast<char>((h.size() >> (8 * b)) & 0xff);
    }
    return write_bytes(name, bytes + h + data);
  }
  static std::string floats(int n) { return std::string(static_cast<size_t>(n) * 4, '\0'); }
};

// Expects read_npy(p) to throw an NpyError naming the file and containing `part`.
#define EXPECT_NPY_ERROR(expr, file, part)                                                       \
  do {                                                                                           \
    try {                                                                                        \
      (void)(expr);                                                                              \
      ADD_FAILURE() << "no error; expected one containing: " << (part);                          \
    } catch (const NpyError& e) {                                                                \
      const std::string msg = e.what();                                                          \
      EXPECT_NE(msg.find(file), std::string::npos) << "message does not name the file: " << msg; \
      EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg;                        \
    }                                                                                            \
  } while (0)

TEST_F(Npy, RoundTripAllWriterTypes) {
  const std::vector<float> f = {1.5f, -2.0f, std::numeric_limits<float>::infinity(),
                                0.0f, -0.0f, 3e38f};
  write_npy(path("f.npy"), {2, 3}, f.data());
  NpyArray a = read_npy(path("f.npy"));
  EXPECT_EQ(a.type(), NpyType::kFloat32);
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.count(), 6);
  EXPECT_EQ(std::memcmp(a.data(), f.data(), 24), 0);
  EXPECT_EQ(a.header.data_offset % 64, 0u);  // NumPy's alignment

  const std::vector<int32_t> i = {-1, 2, 3};
  write_npy(path("i.npy"), {3}, i.data());
  a = read_npy(path("i.npy"));
  EXPECT_EQ(a.type(), NpyType::kInt32);
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{3}));
  bool neg = false;
  uint64_t mag = 0;
  ASSERT_TRUE(a.integer_at(0, &neg, &mag));
  EXPECT_TRUE(neg);
  EXPECT_EQ(mag, 1u);

  const uint64_t u = ~uint64_t{0};
  write_npy(path("u.npy"), {}, &u);  // 0-d
  a = read_npy(path("u.npy"));
  EXPECT_EQ(a.rank(), 0);
  EXPECT_EQ(a.count(), 1);
  ASSERT_TRUE(a.integer_at(0, &neg, &mag));
  EXPECT_EQ(mag, u);

  const std::vector<uint16_t> h = {0x3f80, 0xc000};
  write_npy(path("h.npy"), {1, 2}, h.data());
  EXPECT_EQ(read_npy(path("h.npy")).type(), NpyType::kUInt16);

  write_npy(path("empty.npy"), {0, 5}, static_cast<const float*>(nullptr));
  a = read_npy(path("empty.npy"));
  EXPECT_EQ(a.count(), 0);
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{0, 5}));
}

TEST_F(Npy, ReadsVersions2And3AndPythonVariants) {
  EXPECT_EQ(
      read_npy(write_raw("v2.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                         floats(4), 2))
          .count(),
      4);
  EXPECT_EQ(
      read_npy(write_raw("v3.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                         floats(4), 3))
          .count(),
      4);
  // Double quotes, no trailing comma, other key order, Python 2 long literals, extra spaces.
  const NpyArray a = read_npy(
      write_raw("variants.npy",
                "{ \"shape\" : (2L,3L) , \"fortran_order\":False,\"descr\":\"<f4\"}", floats(6)));
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{2, 3}));
  // Fortran order is harmless for 1-D arrays and dimensions of 1.
  EXPECT_EQ(read_npy(write_raw("f1.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }",
                               floats(3)))
                .count(),
            3);
  EXPECT_EQ(
      read_npy(write_raw("f2.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 3), }",
                         floats(3)))
          .count(),
      3);
  // One-byte types take any byte-order character.
  EXPECT_EQ(read_npy(write_raw("b.npy", "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }",
                               std::string("\x01\x00\x01", 3)))
                .type(),
            NpyType::kBool);
  // Trailing bytes after the data are ignored, as np.load does.
  EXPECT_EQ(
      read_npy(write_raw("trail.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
                         floats(3)))
          .count(),
      1);
}

TEST_F(Npy, RejectsBadFilesWithClearMessages) {
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  std::string p;

  p = write_bytes("empty.npy", "");
  EXPECT_NPY_ERROR(read_npy(p), p, "empty");
  p = write_bytes("text.npy", "this is not a numpy file at all");
  EXPECT_NPY_ERROR(read_npy(p), p, "not a .npy file");
  p = write_bytes("short.npy", std::string("\x93NUM", 4));
  EXPECT_NPY_ERROR(read_npy(p), p, "truncated");
  p = write_bytes("prefix.npy", std::string("\x93NUMPY\x01\x00\x76", 9));
  EXPECT_NPY_ERROR(read_npy(p), p, "truncated");
  p = write_bytes("version.npy",
                  std::string("\x93NUMPY\x04\x00\x10\x00", 10) + std::string(16, ' '));
  EXPECT_NPY_ERROR(read_npy(p), p, "unsupported .npy format version 4.0");

  // Truncated header: the length field promises more than the file has.
  {
    const std::string full =
        std::string("\x93NUMPY\x01\x00", 8) + "\x76" + std::string(1, '\0') + ok_dict;
    p = write_bytes("trunc_header.npy", full);
    EXPECT_NPY_ERROR(read_npy(p), p, "truncated .npy header");
  }
  // Truncated data.
  p = write_raw("trunc_data.npy", ok_dict, floats(5) + "ab");
  EXPECT_NPY_ERROR(read_npy(p), p, "truncated .npy data");
  p = write_raw("no_data.npy", ok_dict, "");
  EXPECT_NPY_ERROR(read_npy(p), p, "needs 24 bytes");

  // Types and layouts.
  p = write_raw("be.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", floats(6));
  EXPECT_NPY_ERROR(read_npy(p), p, "big-endian");
  p = write_raw("native.npy", "{'descr': '=f4', 'fortran_order': False, 'shape': (2, 3), }",
                floats(6));
  EXPECT_NPY_ERROR(read_npy(p), p, "native byte order");
  p = write_raw("fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                floats(6));
  EXPECT_NPY_ERROR(read_npy(p), p, "Fortran-order");
  for (const char* d : {"<c8", "|O", "<U10", "|S5", "<M8[ns]", "f4", "<f16", "<q"}) {
    p = write_raw("dtype.npy",
                  std::string("{'descr': '") + d + "', 'fortran_order': False, 'shape': (1,), }",
                  floats(8));
    EXPECT_NPY_ERROR(read_npy(p), p, std::string("unsupported dtype '") + d + "'");
  }
  p = write_raw("struct.npy", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                floats(1));
  EXPECT_NPY_ERROR(read_npy(p), p, "structured");

  // Missing files and directories.
  EXPECT_NPY_ERROR(read_npy(path("missing.npy")), "missing.npy", "no such file");
  EXPECT_NPY_ERROR(read_npy(dir_.string()), dir_.string(), "is a directory");

  // A huge header length field.
  p = write_bytes("huge_header.npy",
                  std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff", 12) + ok_dict);
  EXPECT_NPY_ERROR(read_npy(p), p, "1 MiB");
}

TEST_F(Npy, RejectsGarbageHeaders) {
  struct Case {
    const char* dict;
    const char* part;
  };
  const Case cases[] = {
      {"", "must be a Python dict"},
      {"garbage", "must be a Python dict"},
      {"{'descr': '<f4', 'fortran_order': False}", "no 'shape'"},
      {"{'fortran_order': False, 'shape': (3,)}", "no 'descr'"},
      {"{'descr': '<f4', 'shape': (3,)}", "no 'fortran_order'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'extra': 1}",
       "unexpected key 'extra'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,)}",
       "duplicate key 'descr'"},
      {"{'descr': <f4, 'fortran_order': False, 'shape': (3,)}", "quoted dtype"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (3,)}",
       "expected ',' or '}' after the value of 'descr'"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (3,)}", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [3]}", "tuple, not a list"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3)}",
       "a 1-element tuple is written (n,)"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-3,)}", "negative dimension"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, x)}", "non-negative integers"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,} ",
       "must be a tuple of non-negative integers"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3 4)}",
       "expected ',' or ')' in 'shape'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} trailing", "unexpected text after"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)", "expected ',' or '}'"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (3,)}", "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "too large"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", "overflows"},
      {"{'descr': '<f\\x34', 'fortran_order': False, 'shape': (3,)}", "escape"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), \xc3\xa9}", "not printable ASCII"},
  };
  int i = 0;
  for (const auto& c : cases) {
    const std::string p = write_raw("garbage" + std::to_string(i++) + ".npy", c.dict, floats(3));
    EXPECT_NPY_ERROR(read_npy(p), p, c.part);
  }
  // NUL bytes inside the header.
  const std::string p =
      write_raw("nul.npy", std::string("{'descr': '<f4'\0, 'shape': (3,)}", 32), floats(3));
  EXPECT_NPY_ERROR(read_npy(p), p, "not printable ASCII");
}

TEST_F(Npy, NeverCrashesOnTruncationsAndMutations) {
  std::vector<float> f(12);
  for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(i) * 0.5f;
  write_npy(path("good.npy"), {3, 4}, f.data());
  std::ifstream in(path("good.npy"), std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Every truncation: an error, except the complete file.
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(parse_npy(good.data(), n, "mem"), NpyError) << "length " << n;
  }
  EXPECT_EQ(parse_npy(good.data(), good.size(), "mem").count(), 12);
  // Random byte mutations of the prefix and header: parse or throw NpyError, nothing else.
  Rng rng(99);
  int parsed = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string m = good;
    const int flips = 1 + static_cast<int>(rng.below(4));
    for (int k = 0; k < flips; ++k) {
      const size_t pos = static_cast<size_t>(rng.below(128));
      m[pos] = static_cast<char>(rng.below(256));
    }
    try {
      const NpyArray a = parse_npy(m.data(), m.size(), "mem");
      ++parsed;
      EXPECT_LE(a.header.data_offset + a.header.data_bytes, m.size());
    } catch (const NpyError&) {
    }
  }
  EXPECT_GT(parsed, 0);  // some mutations only touch padding
}

TEST_F(Npy, LogitsChecks) {
  std::vector<float> f(6, 0.5f);
  write_npy(path("l2.npy"), {2, 3}, f.data());
  LogitsData d = load_logits(path("l2.npy"), false);
  EXPECT_EQ(d.batch, 2);
  EXPECT_EQ(d.vocab, 3);
  EXPECT_EQ(d.dtype, DType::kFloat32);
  EXPECT_EQ(d.view().data, d.array.data());
  write_npy(path("l1.npy"), {6}, f.data());
  d = load_logits(path("l1.npy"), false);
  EXPECT_EQ(d.batch, 1);
  EXPECT_EQ(d.vocab, 6);

  std::string p = path("l0.npy");
  write_npy(p, {}, f.data());
  EXPECT_NPY_ERROR(load_logits(p, false), p, "expected a 2-D array [batch, vocab]");
  p = path("l3.npy");
  write_npy(p, {1, 2, 3}, f.data());
  EXPECT_NPY_ERROR(load_logits(p, false), p, "got shape (1, 2, 3)");
  p = path("v0.npy");
  write_npy(p, {4, 0}, f.data());
  EXPECT_NPY_ERROR(load_logits(p, false), p, "vocabulary size is 0");
  EXPECT_NPY_ERROR(load_logits(path("l2.npy"), true), "l2.npy",
                   "--bf16 was given but the logits are float32");

  const std::vector<uint16_t> h(6, 0x3f80);
  p = path("u2.npy");
  write_npy(p, {2, 3}, h.data());
  EXPECT_NPY_ERROR(load_logits(p, false), p, "pass --bf16");
  d = load_logits(p, true);
  EXPECT_EQ(d.dtype, DType::kBFloat16);

  p = write_raw("f2.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }",
                std::string(12, '\0'));
  EXPECT_EQ(load_logits(p, false).dtype, DType::kFloat16);
  EXPECT_NPY_ERROR(load_logits(p, true), p, "--bf16 was given but the logits are float16");
  p = write_raw("f8.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
                std::string(48, '\0'));
  EXPECT_NPY_ERROR(load_logits(p, false), p, "float64 logits are not supported");
  const std::vector<int32_t> ints(6, 1);
  p = path("i4.npy");
  write_npy(p, {2, 3}, ints.data());
  EXPECT_NPY_ERROR(load_logits(p, false), p, "unsupported dtype int32 for logits");

  // A vocabulary above 2^24 (checked from the header alone).
  NpyArray big;
  big.source = "big.npy";
  big.header.type = NpyType::kFloat32;
  big.header.shape = {1, (int64_t{1} << 24) + 1};
  EXPECT_NPY_ERROR(logits_from_npy(std::move(big), false), "big.npy", "exceeds lmsample's maximum");
}

TEST_F(Npy, ParameterArrays) {
  const std::vector<float> t3 = {0.5f, 1.0f, 0.7f};
  write_npy(path("t3.npy"), {3}, t3.data());
  const NpyArray a3 = read_npy(path("t3.npy"));
  EXPECT_EQ(float_param(a3, "--temperature-npy", 3), t3);
  EXPECT_NPY_ERROR(
      float_param(a3, "--temperature-npy", 4), "t3.npy",
      "--temperature-npy: expected a 0-d array (one value for every row) or a 1-D array of 4 "
      "values (one per row of the logits), got shape (3,)");
  EXPECT_NPY_ERROR(float_param(a3, "--temperature-npy", 2), "t3.npy", "got shape (3,)");
  write_npy(path("t2d.npy"), {3, 1}, t3.data());
  EXPECT_NPY_ERROR(float_param(read_npy(path("t2d.npy")), "--top-p-npy", 3), "t2d.npy",
                   "got shape (3, 1)");

  // 0-d broadcasts to every row.
  const float one = 0.25f;
  write_npy(path("t0.npy"), {}, &one);
  EXPECT_EQ(float_param(read_npy(path("t0.npy")), "--min-p-npy", 4), std::vector<float>(4, 0.25f));

  // float64 and integer arrays convert to float parameters.
  const std::vector<int64_t> i64 = {1, -2, 3};
  write_npy(path("i64.npy"), {3}, i64.data());
  const NpyArray ai = read_npy(path("i64.npy"));
  EXPECT_EQ(float_param(ai, "--temperature-npy", 3), (std::vector<float>{1.0f, -2.0f, 3.0f}));
  EXPECT_EQ(int32_param(ai, "--top-k-npy", 3), (std::vector<int32_t>{1, -2, 3}));
  EXPECT_NPY_ERROR(uint64_param(ai, "--seed-npy", 3), "i64.npy",
                   "--seed-npy: element 1 = -2 is negative");
  EXPECT_NPY_ERROR(uint32_param(ai, "--substream-npy", 3), "i64.npy", "element 1 = -2 is below 0");
  EXPECT_NPY_ERROR(int32_param(a3, "--top-k-npy", 3), "t3.npy",
                   "expected an integer array, got float32");

  const std::vector<int64_t> big = {int64_t{1} << 40};
  write_npy(path("big.npy"), {1}, big.data());
  EXPECT_NPY_ERROR(int32_param(read_npy(path("big.npy")), "--top-k-npy", 1), "big.npy",
                   "element 0 = 1099511627776 is above 2147483647");
  const std::vector<uint64_t> seeds = {~uint64_t{0}, 5};
  write_npy(path("seeds.npy"), {2}, seeds.data());
  EXPECT_EQ(uint64_param(read_npy(path("seeds.npy")), "--seed-npy", 2), seeds);
}

TEST_F(Npy, TokenListsAndBitmasks) {
  const std::vector<int32_t> hist = {1, 2, -1, 5, 5, 5, -1, -1, -1};
  write_npy(path("h.npy"), {3, 3}, hist.data());
  const NpyArray h = read_npy(path("h.npy"));
  const TokenLists t = token_lists(h, "--output-tokens-npy", 3);
  EXPECT_EQ(t.offsets, (std::vector<int64_t>{0, 2, 5, 5}));
  EXPECT_EQ(t.tokens, (std::vector<int32_t>{1, 2, 5, 5, 5}));
  EXPECT_NPY_ERROR(token_lists(h, "--output-tokens-npy", 2), "h.npy",
                   "expected a 2-D integer array [2, L]");
  const std::vector<float> fl(3, 1.0f);
  write_npy(path("hf.npy"), {1, 3}, fl.data());
  EXPECT_NPY_ERROR(token_lists(read_npy(path("hf.npy")), "--prompt-tokens-npy", 1), "hf.npy",
                   "expected an integer array, got float32");
  write_npy(path("h1.npy"), {3}, hist.data());
  EXPECT_EQ(token_lists(read_npy(path("h1.npy")), "--prompt-tokens-npy", 1).tokens,
            (std::vector<int32_t>{1, 2}));

  const std::vector<uint32_t> words(2 * 4, 0xffffffffu);
  write_npy(path("m.npy"), {2, 4}, words.data());
  const NpyArray m = read_npy(path("m.npy"));
  const Bitmask b = bitmask_from_npy(m, "--allowed-mask-npy", 2, 100);
  EXPECT_EQ(b.row_words, 4);
  EXPECT_EQ(b.words.size(), 8u);
  EXPECT_NPY_ERROR(bitmask_from_npy(m, "--allowed-mask-npy", 2, 129), "m.npy",
                   "rows have 4 words but the vocabulary of 129 tokens needs ceil(V / 32) = 5");
  EXPECT_NPY_ERROR(bitmask_from_npy(m, "--allowed-mask-npy", 3, 100), "m.npy", "got shape (2, 4)");
  EXPECT_NPY_ERROR(bitmask_from_npy(read_npy(path("hf.npy")), "--allowed-mask-npy", 1, 3), "hf.npy",
                   "expected int32 or uint32 words");
}

TEST(Synth, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);  // halfway: to even
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3f82);  // halfway: to even (up)
  EXPECT_EQ(float_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00);  // rounds to +inf
  EXPECT_EQ(float_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_fp16(5.9604645e-8f), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_fp16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(float_to_fp16(std::numeric_limits<float>::quiet_NaN()) & 0x7c00, 0x7c00);
}

TEST(Verify, UnavailableBackendIsAnErrorNotACrash) {
  EXPECT_FALSE(verify_check_names(true).empty());
  if (backend_available(Backend::kCuda)) GTEST_SKIP() << "CUDA is available here";
  VerifyOptions o;
  o.backend = Backend::kCuda;
  const VerifyReport r = run_verify(o);
  EXPECT_FALSE(r.passed());
  EXPECT_FALSE(r.error.empty());
}

TEST(Verify, FilterRunsOnlyMatchingChecks) {
  VerifyOptions o;
  o.backend = Backend::kCpu;
  o.quick = true;
  o.filter = "contract/";
  const VerifyReport r = run_verify(o);
  ASSERT_EQ(r.checks.size(), 2u);
  for (const auto& c : r.checks) EXPECT_TRUE(c.passed) << c.name << ": " << c.detail;
  EXPECT_TRUE(r.passed());
}

}  // namespace
}  // namespace lmsample::tool

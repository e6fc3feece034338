// Runs the built `lmsample` tool (path in LMSAMPLE_CLI_EXE) on .npy files written here and checks
// its output against lmsample::sample called in-process, and its behaviour on bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>

#include "lmsample/lmsample.hpp"
#include "npy.hpp"
#include "synth.hpp"
#include "temp_dir_test.hpp"

#ifndef LMSAMPLE_CLI_EXE
#error "LMSAMPLE_CLI_EXE must be the path of the lmsample tool"
#endif

namespace lmsample::tool {
namespace {

namespace fs = std::filesystem;

struct RunResult {
  int exit_code = -1;
  std::string out, err;
  std::vector<nlohmann::json> lines() const {
    std::vector<nlohmann::json> v;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) v.push_back(nlohmann::json::parse(line));
    }
    return v;
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

class Cli : public lmstest::TempDirTest {
 protected:
  Cli() : TempDirTest("lmsample_test_cli_") {}

  RunResult run(const std::string& args) const { return run_shell("", args); }

  // The tool run by the shell as `before` lmsample `args`: `before` may set the environment or
  // pipe into it ("cat f | "); stdout goes to `stdout_to` when given (then RunResult::out is
  // empty), else into RunResult::out.
  RunResult run_shell(const std::string& before, const std::string& args,
                      const std::string& stdout_to = "") const {
    const fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    const std::string cmd = before + quote(LMSAMPLE_CLI_EXE) + " " + args + " >" +
                            (stdout_to.empty() ? quote(out.string()) : stdout_to) + " 2>" +
                            quote(err.string());
    const int status = std::system(cmd.c_str());
    RunResult r;
    if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    if (stdout_to.empty()) r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }
};

// Logits [B, V] with LLM-like rows; row 2 all NaN/-inf (empty), row 3 with two +inf (ties).
std::vector<float> make_logits(int64_t b, int64_t v) {
  Rng rng(5);
  std::vector<float> x(static_cast<size_t>(b * v));
  for (int64_t r = 0; r < b; ++r) fill_llm_row(x.data() + r * v, v, rng, 10.0, 1.2, 0.5);
  if (b > 2)
    for (int64_t t = 0; t < v; ++t)
      x[static_cast<size_t>(2 * v + t)] = t % 3 ? std::nanf("") : -INFINITY;
  if (b > 3 && v > 20)
    x[static_cast<size_t>(3 * v + 10)] = x[static_cast<size_t>(3 * v + 20)] = INFINITY;
  return x;
}

float json_logprob(const nlohmann::json& j) {
  return j.is_null() ? -std::numeric_limits<float>::infinity()
                     : static_cast<float>(j.get<double>());
}

TEST_F(Cli, SampleMatchesTheLibrary) {
  const int64_t B = 6, V = 300;
  const int32_t n_top = 3;
  const std::vector<float> x = make_logits(B, V);
  write_npy(path("logits.npy"), {B, V}, x.data());
  const std::vector<float> temps = {0.0f, 0.7f, 1.0f, 1.3f, 0.9f, 1.0f};
  write_npy(path("t.npy"), {B}, temps.data());
  const std::vector<uint64_t> seeds = {1, 2, 3, 4, 5, ~uint64_t{0}};
  write_npy(path("seeds.npy"), {B}, seeds.data());
  const std::vector<int32_t> hist = {1, 2, 3, -1, 7, 7,  7,  7,  -1, -1, -1, -1,
                                     0, 0, 0, 0,  5, -1, -1, -1, 9,  8,  7,  6};
  write_npy(path("hist.npy"), {B, 4}, hist.data());

  const RunResult r =
      run("sample --logits " + quote(path("logits.npy")) + " --temperature-npy " +
          quote(path("t.npy")) + " --top-p 0.9 --top-k 40 --seed-npy " + quote(path("seeds.npy")) +
          " --step 7 --output-tokens-npy " + quote(path("hist.npy")) +
          " --repetition-penalty 1.2 --frequency-penalty 0.3 --backend cpu --logprobs" +
          " --top-logprobs 3 --tokens-out " + quote(path("tokens.npy")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = r.lines();
  ASSERT_EQ(static_cast<int64_t>(lines.size()), B) << r.out;

  // The same request through the library.
  Request req;
  req.logits.data = x.data();
  req.logits.batch = B;
  req.logits.vocab = V;
  const std::vector<float> top_p(B, 0.9f), rep(B, 1.2f), freq(B, 0.3f);
  const std::vector<int32_t> top_k(B, 40);
  const std::vector<uint64_t> step(B, 7);
  req.params.temperature = temps.data();
  req.params.top_p = top_p.data();
  req.params.top_k = top_k.data();
  req.params.seed = seeds.data();
  req.params.step = step.data();
  req.params.repetition_penalty = rep.data();
  req.params.frequency_penalty = freq.data();
  std::vector<int64_t> off = {0};
  std::vector<int32_t> toks;
  for (int64_t b = 0; b < B; ++b) {
    for (int j = 0; j < 4; ++j)
      if (hist[static_cast<size_t>(b * 4 + j)] >= 0)
        toks.push_back(hist[static_cast<size_t>(b * 4 + j)]);
    off.push_back(static_cast<int64_t>(toks.size()));
  }
  req.output_tokens = SparseRows{off.data(), toks.data(), nullptr};
  req.top_logprobs = n_top;
  std::vector<int32_t> tokens(B), status(B), kept(B), top_ids(B * n_top);
  std::vector<float> logprob(B), top_lp(B * n_top);
  Outputs out{tokens.data(), status.data(),  logprob.data(),
              kept.data(),   top_ids.data(), top_lp.data()};
  ExecConfig cfg;
  std::vector<unsigned char> ws(workspace_size(req, cfg) + 1);
  const Status s = sample(req, out, ws.data(), ws.size(), cfg);
  ASSERT_TRUE(s.ok()) << s.message;

  for (int64_t b = 0; b < B; ++b) {
    const auto& j = lines[static_cast<size_t>(b)];
    const auto i = static_cast<size_t>(b);
    EXPECT_EQ(j.at("row").get<int64_t>(), b);
    EXPECT_EQ(j.at("token").get<int32_t>(), tokens[i]) << "row " << b;
    EXPECT_EQ(j.at("status").get<std::string>(), row_status_name(status[i])) << "row " << b;
    EXPECT_EQ(j.at("kept").get<int32_t>(), kept[i]) << "row " << b;
    // Floats are printed as the shortest text that reads back as the same float.
    EXPECT_EQ(json_logprob(j.at("logprob")), logprob[i]) << "row " << b;
    const auto& top = j.at("top_logprobs");
    size_t k = 0;
    for (int32_t t = 0; t < n_top; ++t) {
      const int32_t id = top_ids[i * n_top + static_cast<size_t>(t)];
      if (id < 0) continue;  // padding is left out
      ASSERT_LT(k, top.size());
      EXPECT_EQ(top[k].at("token").get<int32_t>(), id);
      EXPECT_EQ(json_logprob(top[k].at("logprob")), top_lp[i * n_top + static_cast<size_t>(t)]);
      ++k;
    }
    EXPECT_EQ(k, top.size());
  }
  EXPECT_EQ(lines[2].at("status"), "empty");
  EXPECT_TRUE(lines[2].at("logprob").is_null());
  const NpyArray written = read_npy(path("tokens.npy"));
  ASSERT_EQ(written.count(), B);
  EXPECT_EQ(std::memcmp(written.data(), tokens.data(), static_cast<size_t>(B) * 4), 0);
}

TEST_F(Cli, Bf16AndOneDimensionalLogits) {
  const int64_t V = 1000;
  const std::vector<float> x = make_logits(1, V);
  const std::vector<uint16_t> h = to_bf16(x);
  write_npy(path("bf16.npy"), {V}, h.data());
  const RunResult r = run("sample --logits " + quote(path("bf16.npy")) +
                          " --bf16 --seed 0x2a --step 3 --backend cpu");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = r.lines();
  ASSERT_EQ(lines.size(), 1u);

  Request req;
  req.logits = Logits{h.data(), DType::kBFloat16, 1, V, 0};
  const uint64_t seed = 42, step = 3;
  req.params.seed = &seed;
  req.params.step = &step;
  int32_t token = 0, status = 0;
  Outputs out;
  out.tokens = &token;
  out.status = &status;
  ExecConfig cfg;
  std::vector<unsigned char> ws(workspace_size(req, cfg) + 1);
  ASSERT_TRUE(sample(req, out, ws.data(), ws.size(), cfg).ok());
  EXPECT_EQ(lines[0].at("token").get<int32_t>(), token);
  EXPECT_EQ(lines[0].count("logprob"), 0u);  // only with --logprobs

  const RunResult no_flag = run("sample --logits " + quote(path("bf16.npy")));
  EXPECT_EQ(no_flag.exit_code, 1);
  EXPECT_NE(no_flag.err.find("pass --bf16"), std::string::npos) << no_flag.err;
}

TEST_F(Cli, BadRowParametersStillPrintEveryRow) {
  const int64_t B = 3, V = 50;
  const std::vector<float> x = make_logits(B, V);
  write_npy(path("logits.npy"), {B, V}, x.data());
  const std::vector<float> p = {0.9f, std::nanf(""), 0.5f};
  write_npy(path("p.npy"), {B}, p.data());
  const RunResult r =
      run("sample --logits " + quote(path("logits.npy")) + " --top-p-npy " + quote(path("p.npy")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("row 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("top_p"), std::string::npos) << r.err;
  const auto lines = r.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].at("status"), "ok");
  EXPECT_EQ(lines[1].at("status"), "bad_top_p");
  EXPECT_EQ(lines[1].at("token"), -1);
  EXPECT_EQ(lines[2].at("status"), "empty");  // all NaN / -inf: not an error

  const RunResult t = run("sample --logits " + quote(path("logits.npy")) + " --temperature -1");
  EXPECT_EQ(t.exit_code, 2);
  EXPECT_EQ(t.lines().size(), 3u);
  EXPECT_NE(t.err.find("temperature"), std::string::npos) << t.err;
}

// --gpu-keys sets ExecConfig::gpu_keys: the same tokens whatever its value (on the CPU it is
// ignored), and a value that is not one of its choices is a usage error.
TEST_F(Cli, GpuKeysOptionChangesNoToken) {
  const int64_t B = 6, V = 300;
  const std::vector<float> x = make_logits(B, V);
  write_npy(path("logits.npy"), {B, V}, x.data());
  const std::string base = "sample --logits " + quote(path("logits.npy")) + " --top-p 0.8 --seed 3";
  const RunResult plain = run(base);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  for (const char* keys : {"auto", "on-chip", "stream"}) {
    const RunResult r = run(base + " --gpu-keys " + keys);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, plain.out) << keys;
  }
  const RunResult bad = run(base + " --gpu-keys sideways");
  EXPECT_NE(bad.exit_code, 0);  // (CLI11 reports its own exit code for a rejected value)
  EXPECT_NE(bad.err.find("--gpu-keys"), std::string::npos) << bad.err;
  EXPECT_TRUE(bad.out.empty());
}

TEST_F(Cli, BadFilesGiveAMessageAndNoOutput) {
  const int64_t B = 4, V = 64;
  const std::vector<float> x = make_logits(B, V);
  write_npy(path("logits.npy"), {B, V}, x.data());
  {
    const std::string full = slurp(path("logits.npy"));
    std::ofstream(path("trunc.npy"), std::ios::binary)
        .write(full.data(), static_cast<std::streamsize>(full.size() - 9));
  }
  {
    const std::string garbage("\x93NUMPY\x01\x00\x0f\x00{'descr': 1}  \n", 25);
    std::ofstream(path("garbage.npy"), std::ios::binary)
        .write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  const std::vector<float> t3 = {1.0f, 1.0f, 1.0f};
  write_npy(path("t3.npy"), {3}, t3.data());
  write_npy(path("l3.npy"), {2, 2, 16}, x.data());

  struct Case {
    std::string args, file, part;
  };
  const std::vector<Case> cases = {
      {"sample --logits " + quote(path("trunc.npy")), "trunc.npy", "truncated .npy data"},
      {"sample --logits " + quote(path("garbage.npy")), "garbage.npy", "malformed .npy header"},
      {"sample --logits " + quote(path("missing.npy")), "missing.npy", "no such file"},
      {"sample --logits " + quote(path("l3.npy")), "l3.npy", "expected a 2-D array"},
      {"sample --logits " + quote(path("logits.npy")) + " --temperature-npy " +
           quote(path("t3.npy")),
       "t3.npy", "1-D array of 4 values"},
      {"sample --logits " + quote(path("logits.npy")) + " --seed -5", "--seed", "negative"},
      {"sample --logits " + quote(path("logits.npy")) + " --top-p 0.9x", "--top-p", "not a number"},
  };
  for (const auto& c : cases) {
    const RunResult r = run(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << c.args << "\n" << r.out;
    EXPECT_NE(r.err.find(c.file), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.part), std::string::npos) << c.args << "\n" << r.err;
  }
  // Command-line errors (CLI11) exit non-zero with a message too.
  const RunResult both = run("sample --logits " + quote(path("logits.npy")) +
                             " --top-k 5 --top-k-npy " + quote(path("t3.npy")));
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
  const RunResult no_logits = run("sample");
  EXPECT_NE(no_logits.exit_code, 0);
  EXPECT_NE(no_logits.err.find("--logits"), std::string::npos) << no_logits.err;
}

// Issue 13's faults, each fixed: a thread count the library caps, sizes checked before they
// are allocated, output that cannot be written, --tokens-out problems before any row, and
// --seed-per-row.
TEST_F(Cli, HostileArgumentsGetAMessageNotACrash) {
  const int64_t B = 3, V = 40;
  const std::vector<float> x = make_logits(B, V);
  write_npy(path("logits.npy"), {B, V}, x.data());
  const std::string logits = " --logits " + quote(path("logits.npy"));
  // --threads beyond kMaxCpuThreads (65,536 crashed inside libgomp)
  for (const std::string& cmd : {"sample" + logits, std::string("demo --batch 2 --vocab 100"),
                                 std::string("bench --batch 2 --vocab 100")}) {
    const RunResult r = run(cmd + " --threads 65536");
    EXPECT_NE(r.exit_code, 0) << cmd;
    EXPECT_NE(r.err.find("not in range 0 to " + std::to_string(kMaxCpuThreads)), std::string::npos)
        << cmd << "\n"
        << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // sizes that overflow, or that this machine cannot hold, are named before anything runs
  const RunResult huge = run("demo --batch 9223372036854775807");
  EXPECT_EQ(huge.exit_code, 1);
  EXPECT_NE(huge.err.find("--batch 9223372036854775807 x --vocab 151936"), std::string::npos)
      << huge.err;
  EXPECT_TRUE(huge.out.empty()) << huge.out;
  const RunResult big = run("bench --batch 100000000000 --vocab 151936");
  EXPECT_EQ(big.exit_code, 1);
  EXPECT_NE(big.err.find("MiB"), std::string::npos) << big.err;
  // the demo names Qwen2 only for its vocabulary
  const RunResult small = run("demo --batch 2 --vocab 100 --repeats 1");
  EXPECT_EQ(small.exit_code, 0) << small.err;
  EXPECT_EQ(small.out.find("Qwen2"), std::string::npos) << small.out;
}

TEST_F(Cli, LostOutputIsAnError) {
  const int64_t B = 3, V = 40;
  const std::vector<float> x = make_logits(B, V);
  write_npy(path("logits.npy"), {B, V}, x.data());
  const std::string logits = " --logits " + quote(path("logits.npy"));
  // stdout that cannot take the rows (a full disk): exit 1 and a message, not 0
  if (fs::exists("/dev/full")) {
    for (const std::string& cmd : {"sample" + logits, std::string("verify --quick --only bad"),
                                   "verify-chain --target " + quote(path("logits.npy")) +
                                       " --drafts " + quote(path("d.npy"))}) {
      if (cmd.rfind("verify-chain", 0) == 0) {
        const std::vector<int32_t> d = {1, 2};
        write_npy(path("d.npy"), {1, 2}, d.data());
      }
      const RunResult r = run_shell("", cmd, "/dev/full");
      EXPECT_EQ(r.exit_code, 1) << cmd;
      EXPECT_NE(r.err.find("writing to standard output failed"), std::string::npos) << cmd << "\n"
                                                                                    << r.err;
    }
  }
  // --tokens-out that cannot be written: the error comes before any row is printed
  fs::create_directory(dir_ / "adir");
  for (const std::string& bad : {path("adir"), path("missing/tokens.npy")}) {
    const RunResult r = run("sample" + logits + " --tokens-out " + quote(bad));
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_TRUE(r.out.empty()) << bad << "\n" << r.out;
    EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;
  }
}

// Memory (issue 13, item 4): a stream declaring more than this machine's memory is refused
// before anything is allocated, with the sizes; a file is mapped, and `sample`'s peak memory
// stays within the README's bound: the logits, the workspace, about 200 bytes a row, and the
// process itself.
TEST_F(Cli, MemoryIsCheckedAndBounded) {
  {
    const std::string header = make_npy_header("<f4", false, {int64_t{1} << 40});
    std::ofstream(path("huge_header.npy"), std::ios::binary)
        .write(header.data(), static_cast<std::streamsize>(header.size()));
    const RunResult piped = run_shell("cat " + quote(path("huge_header.npy")) + " | ",
                                      "sample --logits -", "/dev/null");
    EXPECT_EQ(piped.exit_code, 1);
    const std::string& e = piped.err;
    EXPECT_NE(e.find("needs 4194304.0 MiB"), std::string::npos) << e;
    EXPECT_NE(e.find("of memory"), std::string::npos) << e;
    // the same header as a file: its size is checked against the file's
    const RunResult r = run("sample --logits " + quote(path("huge_header.npy")));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("truncated .npy data"), std::string::npos) << r.err;
  }
  const int64_t B = 1024, V = 32000;
  {
    std::vector<float> x(static_cast<size_t>(B * V));
    Rng rng(9);
    for (int64_t r = 0; r < B; ++r) fill_llm_row(x.data() + r * V, V, rng, 10.0, 1.2, 0.5);
    write_npy(path("big.npy"), {B, V}, x.data());
  }
  const RunResult r = run("sample --logits " + quote(path("big.npy")) + " --threads 2 --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines().size(), static_cast<size_t>(B));
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the tool runs under AddressSanitizer, whose shadow memory is not the tool's: "
                  "the bound is checked in the normal build";
#endif
  rusage ru{};
  ASSERT_EQ(getrusage(RUSAGE_CHILDREN, &ru), 0);
  const double peak = static_cast<double>(ru.ru_maxrss) * 1024.0;  // (kilobytes on Linux)
  Request req;
  req.logits = Logits{nullptr, DType::kFloat32, B, V, 0};
  ExecConfig cfg;
  cfg.cpu_threads = 2;
  const double bound = static_cast<double>(B * V * 4) +
                       static_cast<double>(workspace_size(req, cfg)) + 200.0 * B + 48.0 * (1 << 20);
  EXPECT_LE(peak, bound) << "peak " << peak / (1 << 20) << " MiB, bound " << bound / (1 << 20)
                         << " MiB";
}

// The tool's bad-input corpus (issue 13): crafted .npy files (truncated, huge or negative shapes,
// every wrong dtype, Fortran order, bad headers, wrong-length parameter files, short masks,
// out-of-range history ids, special files), each with the exit code and the message it gives.
TEST_F(Cli, BadInputCorpus) {
  // a version-1 .npy header around `dict` (padded to 64 bytes), `magic` and `version` as given
  const auto header = [](const std::string& dict, const std::string& magic = "\x93NUMPY",
                         char version = 1) {
    std::string h = dict;
    h += std::string(64 - (10 + h.size() + 1) % 64, ' ') + "\n";
    std::string out = magic + std::string(1, version) + std::string(1, '\0');
    out += static_cast<char>(h.size() & 0xff);
    out += static_cast<char>(h.size() >> 8);
    return out + h;
  };
  const auto put = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(path(name), std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return quote(path(name));
  };
  const auto dict = [](const std::string& descr, const std::string& fortran,
                       const std::string& shape) {
    return "{'descr': " + descr + ", 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
  };
  const std::string zeros(64, '\0');
  std::vector<float> ok(2 * 64, 0.0f);
  write_npy(path("ok.npy"), {2, 64}, ok.data());
  const std::string okf = quote(path("ok.npy"));
  const std::vector<uint32_t> short_mask(2, ~0u);
  write_npy(path("mask_short.npy"), {2, 1}, short_mask.data());
  const std::vector<int32_t> hist = {70, 1, 2, 3};
  write_npy(path("hist_big.npy"), {2, 2}, hist.data());
  const std::vector<float> t3(3, 1.0f);
  write_npy(path("t3.npy"), {3}, t3.data());
  struct Case {
    std::string args;
    int exit_code;
    std::string part;
  };
  const std::vector<Case> cases = {
      {"--logits " +
           put("huge.npy", header(dict("'<f4'", "False", "(1099511627776, 1099511627776)"))),
       1, "is too large (its size overflows)"},
      {"--logits " + put("neg.npy", header(dict("'<f4'", "False", "(-1, 5)")) + zeros), 1,
       "negative dimension"},
      {"--logits " + put("f8.npy", header(dict("'<f8'", "False", "(2, 4)")) + zeros), 1,
       "float64 logits are not supported"},
      {"--logits " + put("i4.npy", header(dict("'<i4'", "False", "(2, 4)")) + zeros), 1,
       "unsupported dtype int32"},
      {"--logits " + put("b1.npy", header(dict("'|b1'", "False", "(2, 4)")) + zeros), 1,
       "unsupported dtype bool"},
      {"--logits " + put("be.npy", header(dict("'>f4'", "False", "(2, 4)")) + zeros), 1,
       "big-endian data"},
      {"--logits " + put("fort.npy", header(dict("'<f4'", "True", "(2, 4)")) + zeros), 1,
       "Fortran-order"},
      {"--logits " +
           put("magic.npy", header(dict("'<f4'", "False", "(2, 4)"), "\x93NUMPZ") + zeros),
       1, "not a .npy file"},
      {"--logits " +
           put("ver9.npy", header(dict("'<f4'", "False", "(2, 4)"), "\x93NUMPY", 9) + zeros),
       1, "unsupported .npy format version 9"},
      {"--logits " + put("nokey.npy", header("{'descr': '<f4', 'shape': (2, 4), }") + zeros), 1,
       "no 'fortran_order' key"},
      {"--logits " + put("struct.npy", header(dict("[('a', '<f4')]", "False", "(2, 4)")) + zeros),
       1, "structured (record) dtypes"},
      {"--logits " + put("hlen.npy", std::string("\x93NUMPY\x01\x00\x60\xea{'descr'", 18)), 1,
       "truncated .npy header"},
      {"--logits " + put("trunc.npy", header(dict("'<f4'", "False", "(2, 64)")) + zeros), 1,
       "truncated .npy data"},
      {"--logits /dev/null", 1, "the file is empty"},
      {"--logits " + quote(dir_.string()), 1, "is a directory"},
      {"--logits " + okf + " --temperature-npy " + quote(path("t3.npy")), 1,
       "1-D array of 2 values"},
      {"--logits " + okf + " --allowed-mask-npy " + quote(path("mask_short.npy")), 1,
       "needs ceil(V / 32) = 2"},
      {"--logits " + okf + " --output-tokens-npy " + quote(path("hist_big.npy")), 2,
       "outside [0, vocab = 64)"},
  };
  for (const Case& c : cases) {
    const RunResult r = run("sample " + c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.part), std::string::npos) << c.args << "\n" << r.err;
    if (c.exit_code == 1) {
      EXPECT_TRUE(r.out.empty()) << c.args << "\n" << r.out;
    }
  }
}

// `sample` runs a large file in blocks of rows (LMSAMPLE_TOOL_BLOCK_MB, 256 by default) with
// its progress on stderr: the same output as one call, and bad rows named by their row.
TEST_F(Cli, BlocksOfRowsGiveTheSameOutputAndProgress) {
  const int64_t B = 24, V = 32000;  // 3 MiB: blocks of 8 rows at 1 MiB
  std::vector<float> x(static_cast<size_t>(B * V));
  Rng rng(11);
  for (int64_t r = 0; r < B; ++r) fill_llm_row(x.data() + r * V, V, rng, 10.0, 1.2, 0.5);
  write_npy(path("rows.npy"), {B, V}, x.data());
  for (const std::vector<int64_t>& bad : {std::vector<int64_t>{20}, std::vector<int64_t>{2, 20}}) {
    std::vector<float> t(static_cast<size_t>(B), 0.8f);
    for (const int64_t r : bad) t[static_cast<size_t>(r)] = -1.0f;
    write_npy(path("t.npy"), {B}, t.data());
    const std::string args = "sample --logits " + quote(path("rows.npy")) + " --temperature-npy " +
                             quote(path("t.npy")) + " --seed-per-row 5 --logprobs";
    const RunResult one = run(args);
    const RunResult blocks = run_shell("LMSAMPLE_TOOL_BLOCK_MB=1 ", args);
    EXPECT_EQ(one.exit_code, 2) << one.err;
    EXPECT_EQ(blocks.exit_code, 2);
    EXPECT_EQ(blocks.out, one.out);
    const std::string& e = blocks.err;
    EXPECT_NE(e.find("8 of 24 rows"), std::string::npos) << e;
    EXPECT_NE(e.find("24 of 24 rows"), std::string::npos) << e;
    EXPECT_NE(e.find("row " + std::to_string(bad[0]) + ":"), std::string::npos) << e;
    EXPECT_EQ(one.err.find("of 24 rows"), std::string::npos) << one.err;  // one block: quiet
    if (bad.size() > 1) {
      EXPECT_NE(e.find("and 1 more bad rows"), std::string::npos) << e;
    }
  }
}

// Command-line mistakes named as what they are (issue 13, item 6).
TEST_F(Cli, MessagesSayWhatIsWrong) {
  const int64_t B = 2, V = 40;
  const std::vector<float> x = make_logits(B, V);
  write_npy(path("logits.npy"), {B, V}, x.data());
  const std::string logits = " --logits " + quote(path("logits.npy"));
  struct Case {
    std::string args, part;
  };
  const std::vector<Case> cases = {
      {"zzz", "unknown subcommand 'zzz'"},
      {"sample" + logits + " --threads -1", "not in range 0 to 1024"},
      {"sample" + logits + " --top-logprobs 1.5", "'1.5' is not an integer"},
      {"demo --batch 2x", "'2x' is not an integer"},
      {"verify --only zzz", "--only 'zzz' matches no check"},
      {"sample" + logits + " first second third", "not expected: first second third"},
  };
  for (const Case& c : cases) {
    const RunResult r = run(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.exit_code, 3) << c.args << ": a usage error, not a failed check";
    EXPECT_NE(r.err.find(c.part), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << c.args << "\n" << r.out;
  }
  // --backend hip: the help says what the tool does with it, and it does that
  EXPECT_NE(run("sample --help").out.find("hip is refused"), std::string::npos);
  const RunResult hip = run("sample" + logits + " --backend hip");
  EXPECT_EQ(hip.exit_code, 1);
  EXPECT_NE(hip.err.find("drives CUDA devices only"), std::string::npos) << hip.err;
}

// `--logits -` and pipes (/dev/stdin) are read as a stream: the same rows as the file gives.
TEST_F(Cli, StandardInputAndPipesAreRead) {
  const int64_t B = 4, V = 64;
  const std::vector<float> x = make_logits(B, V);
  write_npy(path("logits.npy"), {B, V}, x.data());
  const RunResult file = run("sample --logits " + quote(path("logits.npy")) + " --seed 3");
  ASSERT_EQ(file.exit_code, 0) << file.err;
  for (const std::string& src : {std::string("-"), std::string("/dev/stdin")}) {
    const RunResult r = run_shell("cat " + quote(path("logits.npy")) + " | ",
                                  "sample --logits " + src + " --seed 3");
    EXPECT_EQ(r.exit_code, 0) << src << ": " << r.err;
    EXPECT_EQ(r.out, file.out) << src;
  }
  // a truncated stream says so
  const RunResult r = run_shell("head -c 60 " + quote(path("logits.npy")) + " | ",
                                "sample --logits -", "/dev/null");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("truncated .npy header"), std::string::npos) << r.err;
}

TEST_F(Cli, SeedPerRowGivesIdenticalRowsTheirOwnDraws) {
  const int64_t B = 8, V = 50;
  std::vector<float> x(static_cast<size_t>(B * V));
  for (int64_t i = 0; i < B * V; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i % V) * 0.01f;
  write_npy(path("same.npy"), {B, V}, x.data());  // every row the same, nearly flat
  const std::string logits = " --logits " + quote(path("same.npy"));
  const RunResult one = run("sample" + logits + " --seed 42");
  const RunResult per = run("sample" + logits + " --seed-per-row 42");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(per.exit_code, 0) << per.err;
  const auto a = one.lines(), b = per.lines();
  ASSERT_EQ(a.size(), static_cast<size_t>(B));
  ASSERT_EQ(b.size(), static_cast<size_t>(B));
  // --seed: one seed for every row, so one token; --seed-per-row: the library's with 42 + r
  std::vector<uint64_t> seeds(static_cast<size_t>(B));
  for (int64_t r = 0; r < B; ++r) seeds[static_cast<size_t>(r)] = 42 + static_cast<uint64_t>(r);
  Request req;
  req.logits = Logits{x.data(), DType::kFloat32, B, V, 0};
  req.params.seed = seeds.data();
  std::vector<int32_t> tokens(static_cast<size_t>(B)), status(static_cast<size_t>(B));
  Outputs out;
  out.tokens = tokens.data();
  out.status = status.data();
  ExecConfig cfg;
  std::vector<unsigned char> ws(workspace_size(req, cfg));
  ASSERT_TRUE(sample(req, out, ws.data(), ws.size(), cfg).ok());
  bool differ = false;
  for (int64_t r = 0; r < B; ++r) {
    EXPECT_EQ(a[static_cast<size_t>(r)]["token"], a[0]["token"]) << "row " << r;
    EXPECT_EQ(b[static_cast<size_t>(r)]["token"].get<int32_t>(), tokens[static_cast<size_t>(r)])
        << "row " << r;
    differ = differ || tokens[static_cast<size_t>(r)] != tokens[0];
  }
  EXPECT_TRUE(differ) << "8 draws from a nearly flat row of 50 tokens all equal";
  const RunResult both = run("sample" + logits + " --seed 1 --seed-per-row 42");
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
}

}  // namespace
}  // namespace lmsample::tool

namespace lmsample::tool {
namespace {

// verify-chain prints what lmsample::verify_chain returns; a bad draft id is an error that
// names it, with nothing on stdout.
TEST_F(Cli, VerifyChainMatchesTheLibrary) {
  const int64_t B = 5, K = 3, V = 64;
  std::vector<float> x = make_logits(B * (K + 1), V);
  for (int64_t t = 0; t < V; ++t) x[static_cast<size_t>(2 * V + t)] = 0.1f * static_cast<float>(t);
  std::vector<int32_t> drafts(static_cast<size_t>(B * K));
  for (size_t i = 0; i < drafts.size(); ++i) drafts[i] = static_cast<int32_t>((7 * i) % V);
  drafts[0] = V - 1;  // (row 0's likely token or not: either way something to check)
  write_npy(path("target.npy"), {B * (K + 1), V}, x.data());
  write_npy(path("drafts.npy"), {B, K}, drafts.data());
  const RunResult r = run("verify-chain --target " + quote(path("target.npy")) + " --drafts " +
                          quote(path("drafts.npy")) + " --temperature 0.8 --top-p 0.95 --seed 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = r.lines();
  ASSERT_EQ(lines.size(), static_cast<size_t>(B));
  std::vector<int64_t> offsets;
  for (int64_t b = 0; b <= B; ++b) offsets.push_back(b * (K + 1));
  ChainRequest req;
  req.target = Logits{x.data(), DType::kFloat32, B * (K + 1), V, 0};
  req.row_offsets = offsets.data();
  req.requests = B;
  req.draft_tokens = drafts.data();
  req.params.defaults.temperature = 0.8f;
  req.params.defaults.top_p = 0.95f;
  req.params.defaults.seed = 3;
  std::vector<int32_t> acc(B), tok(static_cast<size_t>(B * (K + 1))), st(B);
  std::vector<unsigned char> ws(verify_chain_workspace_size(req, {}));
  ASSERT_TRUE(
      verify_chain(req, {acc.data(), tok.data(), st.data()}, ws.data(), ws.size(), {}).ok());
  for (int64_t b = 0; b < B; ++b) {
    const auto& j = lines[static_cast<size_t>(b)];
    EXPECT_EQ(j["request"], b);
    EXPECT_EQ(j["accepted"], acc[static_cast<size_t>(b)]);
    EXPECT_EQ(j["status"], row_status_name(st[static_cast<size_t>(b)]));
    std::vector<int32_t> want;
    for (int64_t i = 0; i <= K; ++i) {
      const int32_t t = tok[static_cast<size_t>(b * (K + 1) + i)];
      if (t >= 0) want.push_back(t);
    }
    EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), want) << "request " << b;
    EXPECT_EQ(want.size(), static_cast<size_t>(acc[static_cast<size_t>(b)]) + 1);
  }
  drafts[4] = static_cast<int32_t>(V);
  write_npy(path("drafts.npy"), {B, K}, drafts.data());
  const RunResult bad = run("verify-chain --target " + quote(path("target.npy")) + " --drafts " +
                            quote(path("drafts.npy")));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(bad.out.empty()) << bad.out;
  EXPECT_NE(bad.err.find("request 1: draft 1 = 64 is outside [0, vocab = 64)"), std::string::npos)
      << bad.err;
  write_npy(path("drafts.npy"), {B, K + 1}, std::vector<int32_t>(B * (K + 1), 0).data());
  const RunResult shape = run("verify-chain --target " + quote(path("target.npy")) + " --drafts " +
                              quote(path("drafts.npy")));
  EXPECT_EQ(shape.exit_code, 1);
  EXPECT_NE(shape.err.find("needs B (K + 1) = 25"), std::string::npos) << shape.err;
}

}  // namespace
}  // namespace lmsample::tool

// `lmsample`: the command-line tool of the lmsample library.
//
//   lmsample sample --logits F.npy [...]   sample one token per row, JSON lines out
//   lmsample demo                          a Qwen2-sized synthetic batch under typical settings
//   lmsample verify [--quick]              statistical and contract self-check of this machine
//   lmsample bench                         time sample() for typical settings
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "exec.hpp"
#include "inputs.hpp"
#include "lmsample/lmsample.hpp"
#include "npy.hpp"
#include "synth.hpp"
#include "verify.hpp"

#ifndef LMSAMPLE_TOOL_VERSION
#define LMSAMPLE_TOOL_VERSION "0.1.0"
#endif

namespace lmsample::tool {
namespace {

// Exit codes.
constexpr int kExitOk = 0;
constexpr int kExitError = 1;        // bad input, unusable backend, library error
constexpr int kExitBadRows = 2;      // `sample`: some rows had invalid parameters
constexpr int kExitCheckFailed = 3;  // `verify`: a check failed

//! A problem with the command line or the input files; main prints what() and exits 1.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A synthetic batch of `batch` x `vocab` floats (demo, bench): its size checked before anything
// is allocated, against overflow and against this machine's memory, with the sizes named.
void check_synthetic_size(int64_t batch, int64_t vocab) {
  int64_t elems = 0, bytes = 0;
  if (__builtin_mul_overflow(batch, vocab, &elems) ||
      __builtin_mul_overflow(elems, int64_t{4}, &bytes))
    throw UsageError("--batch " + std::to_string(batch) + " x --vocab " + std::to_string(vocab) +
                     " float logits do not fit in 64 bits of bytes");
  const uint64_t mem = physical_memory();
  if (mem > 0 && static_cast<uint64_t>(bytes) >= mem)
    throw UsageError("--batch " + std::to_string(batch) + " x --vocab " + std::to_string(vocab) +
                     " float logits need " + std::to_string(bytes >> 20) + " MiB, more than this " +
                     "machine's " + std::to_string(mem >> 20) + " MiB of memory");
}

// An option's text is a whole decimal integer (checked before any range, so that "1.5" is called
// what it is).
const CLI::Validator kInteger(
    [](std::string& text) -> std::string {
      size_t i = text.size() > 0 && (text[0] == '-' || text[0] == '+') ? 1 : 0;
      if (i == text.size()) return "'" + text + "' is not an integer";
      for (; i < text.size(); ++i)
        if (text[i] < '0' || text[i] > '9') return "'" + text + "' is not an integer";
      return std::string();
    },
    "");

// ---- number parsing (strict: the whole text, decimal or 0x hex for integers) ----

float parse_float(const std::string& text, const std::string& what) {
  if (text.empty()) throw UsageError(what + ": empty value");
  errno = 0;
  char* end = nullptr;
  const float v = std::strtof(text.c_str(), &end);
  if (end != text.c_str() + text.size())
    throw UsageError(what + ": '" + text + "' is not a number");
  return v;  // nan / inf are passed on: the library reports them as bad parameters
}

// Parses an integer in [lo, hi] (hi as uint64 so that uint64 seeds fit).
bool parse_integer(const std::string& text, bool* negative, uint64_t* magnitude) {
  size_t i = 0;
  *negative = false;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) *negative = text[i++] == '-';
  int base = 10;
  if (text.size() - i > 2 && text[i] == '0' && (text[i + 1] == 'x' || text[i + 1] == 'X')) {
    base = 16;
    i += 2;
  }
  if (i >= text.size()) return false;
  const char* first = text.data() + i;
  const char* last = text.data() + text.size();
  const auto r = std::from_chars(first, last, *magnitude, base);
  return r.ec == std::errc() && r.ptr == last;
}

int64_t parse_int_range(const std::string& text, const std::string& what, int64_t lo, int64_t hi) {
  bool neg = false;
  uint64_t mag = 0;
  if (!parse_integer(text, &neg, &mag))
    throw UsageError(what + ": '" + text + "' is not an integer");
  const bool ok =
      neg ? mag <= static_cast<uint64_t>(-(lo + 1)) + 1 : mag <= static_cast<uint64_t>(hi);
  if (!ok)
    throw UsageError(what + ": " + text + " is out of range [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  if (neg && mag != 0) return -static_cast<int64_t>(mag - 1) - 1;
  return static_cast<int64_t>(mag);
}

uint64_t parse_u64(const std::string& text, const std::string& what) {
  bool neg = false;
  uint64_t mag = 0;
  if (!parse_integer(text, &neg, &mag))
    throw UsageError(what + ": '" + text + "' is not an unsigned 64-bit integer");
  if (neg && mag != 0) throw UsageError(what + ": " + text + " is negative");
  return mag;
}

// ---- JSON ----

// A float as the shortest decimal that reads back as the same float; -inf / NaN as null.
nlohmann::ordered_json json_float(float f) {
  if (!std::isfinite(f)) return nullptr;
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, f);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

// ---- per-row parameter options: --NAME VALUE (every row) or --NAME-npy FILE (one per row) ----

enum class ParamKind { kFloat, kInt32, kUInt32, kUInt64 };

struct ParamOption {
  std::string name;
  ParamKind kind;
  std::string value;  // scalar text
  std::string path;   // .npy file
  CLI::Option* scalar = nullptr;
  CLI::Option* file = nullptr;
  std::vector<float> f;
  std::vector<int32_t> i32;
  std::vector<uint32_t> u32;
  std::vector<uint64_t> u64;

  void add(CLI::App* app, const std::string& help) {
    scalar = app->add_option("--" + name, value, help + " (the same value for every row)");
    file = app->add_option(
        "--" + name + "-npy", path,
        "a .npy file of per-row " + name + " values: 1-D with one value per logits row, or 0-d");
    scalar->type_name(kind == ParamKind::kFloat    ? "FLOAT"
                      : kind == ParamKind::kInt32  ? "INT"
                      : kind == ParamKind::kUInt32 ? "UINT32"
                                                   : "UINT64");
    file->type_name("FILE");
    scalar->excludes(file);
    file->excludes(scalar);
    scalar->group("Sampling parameters");
    file->group("Per-row parameter files");
  }
  bool given() const { return scalar->count() > 0 || file->count() > 0; }
  void load(int64_t batch) {
    const auto n = static_cast<size_t>(batch);
    const std::string flag = "--" + name;
    if (scalar->count()) {
      switch (kind) {
        case ParamKind::kFloat:
          f.assign(n, parse_float(value, flag));
          break;
        case ParamKind::kInt32:
          i32.assign(n, static_cast<int32_t>(parse_int_range(value, flag,
                                                             std::numeric_limits<int32_t>::min(),
                                                             std::numeric_limits<int32_t>::max())));
          break;
        case ParamKind::kUInt32:
          u32.assign(n, static_cast<uint32_t>(
                            parse_int_range(value, flag, 0, std::numeric_limits<uint32_t>::max())));
          break;
        case ParamKind::kUInt64:
          u64.assign(n, parse_u64(value, flag));
          break;
      }
    } else if (file->count()) {
      const NpyArray a = read_npy(path);
      const std::string what = flag + "-npy";
      switch (kind) {
        case ParamKind::kFloat:
          f = float_param(a, what, batch);
          break;
        case ParamKind::kInt32:
          i32 = int32_param(a, what, batch);
          break;
        case ParamKind::kUInt32:
          u32 = uint32_param(a, what, batch);
          break;
        case ParamKind::kUInt64:
          u64 = uint64_param(a, what, batch);
          break;
      }
    }
  }
  template <class T>
  const T* ptr(const std::vector<T>& v) const {
    return given() ? v.data() : nullptr;
  }
};

// ---- sample ----

struct SampleArgs {
  std::string logits;
  bool bf16 = false;
  std::vector<std::unique_ptr<ParamOption>> params;
  std::string prompt_npy, output_npy, mask_npy, tokens_out;
  std::string seed_per_row;  // --seed-per-row BASE: row r's seed is BASE + r
  CLI::Option* seed_per_row_opt = nullptr;
  bool logprobs = false;
  int top_logprobs = 0;
  std::string backend = "auto";
  int threads = 0;
  std::string gpu_keys = "auto";

  ParamOption& p(const std::string& name) {
    for (auto& q : params)
      if (q->name == name) return *q;
    throw std::logic_error("no parameter " + name);
  }
};

// --gpu-keys: ExecConfig::gpu_keys (where a GPU call keeps its keys; results never depend on it).
void add_gpu_keys_option(CLI::App* cmd, std::string& value) {
  cmd->add_option("--gpu-keys", value,
                  "auto | on-chip | stream: where a GPU call keeps each row's keys between passes "
                  "(speed only; see lmsample::GpuKeys)")
      ->check(CLI::IsMember({"auto", "on-chip", "stream"}));
}

void add_sample_command(CLI::App& app, SampleArgs& a) {
  auto* s = app.add_subcommand("sample",
                               "Sample one token per row of a logits .npy file; JSON lines out");
  s->footer(
      "Output: one JSON object per row, in row order, on stdout:\n"
      "  {\"row\":0,\"token\":1234,\"status\":\"ok\",\"kept\":57,\"logprob\":-1.25,\n"
      "   \"top_logprobs\":[{\"token\":1234,\"logprob\":-1.25},...]}\n"
      "\"logprob\" appears with --logprobs, \"top_logprobs\" with --top-logprobs N > 0 (entries\n"
      "past the row's valid tokens are left out). A logprob of -inf (an empty row, or a row whose\n"
      "status is not ok) is written as null. logprobs are those of the processed logits before\n"
      "temperature and truncation (docs/contract.md section 5). Floats are printed as the\n"
      "shortest decimal that reads back as the same float32.\n"
      "Rows with an invalid parameter get token -1 and a status naming it (\"bad_top_p\", ...);\n"
      "the library's message goes to stderr and the exit status is 2. Empty rows (every token\n"
      "masked, -inf or NaN) get status \"empty\", token -1 and exit status 0.\n"
      "Parameters not given take the library defaults: temperature 1, top-k 0 (off), top-p 1\n"
      "(off), min-p 0 (off), penalties off, seed 0, step 0, substream 0. The result of a row is\n"
      "a pure function of its logits, parameters, seed, step and substream: --seed 42 gives\n"
      "every row seed 42, so identical rows get identical tokens; --seed-per-row 42 gives row r\n"
      "seed 42 + r.\n"
      "Exit status: 0 ok, 1 error (message on stderr, no rows printed), 2 some rows had invalid\n"
      "parameters.\n"
      "Example:\n"
      "  lmsample sample --logits logits.npy --temperature 0.7 --top-p 0.9 --seed 42 --logprobs");
  s->add_option(
       "--logits", a.logits,
       "logits .npy file: 2-D [batch, vocab] (or 1-D [vocab] = one row) of float32 '<f4',\n"
       "float16 '<f2', or bfloat16 stored as uint16 '<u2' (with --bf16); little-endian, C order;\n"
       "- (or a pipe) reads it from standard input")
      ->required()
      ->type_name("FILE");
  s->add_flag("--bf16", a.bf16,
              "the logits file holds bfloat16 bit patterns as uint16 (or 2-byte void)");
  struct Def {
    const char* name;
    ParamKind kind;
    const char* help;
  };
  const Def defs[] = {
      {"temperature", ParamKind::kFloat, "temperature >= 0; 0 = greedy (lowest id among ties)"},
      {"top-k", ParamKind::kInt32, "keep the k highest logits (ties with the k-th kept); 0 = off"},
      {"top-p", ParamKind::kFloat,
       "nucleus: keep the smallest top set with probability >= p, p in (0, 1]; 1 = off"},
      {"min-p", ParamKind::kFloat, "keep tokens with p >= min_p * p_max, min_p in [0, 1]; 0 = off"},
      {"repetition-penalty", ParamKind::kFloat,
       "repetition penalty > 0 for tokens in the prompt/output history; 1 = off"},
      {"frequency-penalty", ParamKind::kFloat,
       "frequency penalty in [-2, 2] per occurrence in the output history"},
      {"presence-penalty", ParamKind::kFloat,
       "presence penalty in [-2, 2] for tokens in the output history"},
      {"seed", ParamKind::kUInt64, "Philox key of the row (unsigned 64-bit, decimal or 0x hex)"},
      {"step", ParamKind::kUInt64, "Philox counter: the decoding step (unsigned 64-bit)"},
      {"substream", ParamKind::kUInt32,
       "sub-stream id (unsigned 32-bit), e.g. for speculative drafts"},
  };
  for (const auto& d : defs) {
    auto p = std::make_unique<ParamOption>();
    p->name = d.name;
    p->kind = d.kind;
    p->add(s, d.help);
    a.params.push_back(std::move(p));
  }
  s->add_option(
       "--prompt-tokens-npy", a.prompt_npy,
       "prompt token ids per row (repetition penalty): integer .npy [batch, L]; negative ids\n"
       "are padding; [L] when batch = 1")
      ->type_name("FILE")
      ->group("Token histories and masks");
  s->add_option(
       "--output-tokens-npy", a.output_npy,
       "generated token ids per row (repetition, frequency and presence penalties): integer\n"
       ".npy [batch, L]; negative ids are padding; [L] when batch = 1")
      ->type_name("FILE")
      ->group("Token histories and masks");
  s->add_option(
       "--allowed-mask-npy", a.mask_npy,
       "allowed-token bitmask: int32/uint32 .npy [batch, W], W >= ceil(vocab/32); bit t%32\n"
       "of word t/32 set = token t allowed (xgrammar's layout)")
      ->type_name("FILE")
      ->group("Token histories and masks");
  a.seed_per_row_opt =
      s->add_option("--seed-per-row", a.seed_per_row,
                    "row r's seed is BASE + r (mod 2^64): independent draws for identical rows, "
                    "which --seed (one seed for every row) gives the same token")
          ->type_name("BASE")
          ->group("Sampling parameters");
  a.seed_per_row_opt->excludes(a.p("seed").scalar)->excludes(a.p("seed").file);
  s->add_flag("--logprobs", a.logprobs, "add \"logprob\": the chosen token's log-probability");
  s->add_option("--top-logprobs", a.top_logprobs,
                "add the N most likely tokens with their logprobs (0..64)")
      ->check(kInteger)
      ->check(CLI::Range(0, static_cast<int>(kMaxTopLogprobs)));
  s->add_option(
       "--backend", a.backend,
       "auto | cpu | cuda (auto: CUDA when built in and a GPU is present); hip is refused with a "
       "message (the tool drives CUDA devices only; the library itself has Backend::kHip)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "hip"}));
  s->add_option("--threads", a.threads, "CPU threads; 0 = all (results never depend on it)")
      ->check(kInteger)
      ->check(CLI::Range(0, kMaxCpuThreads));
  add_gpu_keys_option(s, a.gpu_keys);
  s->add_option("--tokens-out", a.tokens_out, "also write the tokens as an int32 .npy file [batch]")
      ->type_name("FILE");
}

// ---- verify-chain: speculative decoding's chain verification (docs/contract.md section 8) ----
struct ChainArgs {
  std::string target, drafts, draft_probs, draft_logits;
  bool bf16 = false;
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f;
  int32_t top_k = 0;
  uint64_t seed = 0, step = 0;
  int threads = 0;
};

void add_verify_chain_command(CLI::App& app, ChainArgs& a) {
  auto* c = app.add_subcommand(
      "verify-chain",
      "Verify speculative drafts against the target's logits (chain verification, CPU); JSON "
      "lines out");
  c->footer(
      "Request b has K drafts (row b of --drafts) and K + 1 target rows: rows b (K + 1) ..\n"
      "b (K + 1) + K of --target. Output: one JSON object per request, in order, on stdout:\n"
      "  {\"request\":0,\"accepted\":2,\"tokens\":[17,4,99],\"status\":\"ok\"}\n"
      "(the accepted drafts, then the recovered or bonus token). The emitted tokens are\n"
      "distributed exactly as sampling the target alone; the result is a pure function of the\n"
      "inputs, the parameters, the seed and the step (docs/contract.md section 8).\n"
      "Exit status: 0 ok, 1 error (message on stderr, nothing printed).\n"
      "Example:\n"
      "  lmsample verify-chain --target target.npy --drafts drafts.npy --temperature 0.8 --seed 7");
  c->add_option("--target", a.target,
                "target logits .npy [B (K + 1), V]: float32, float16, or bfloat16 with --bf16")
      ->required()
      ->type_name("FILE");
  c->add_flag("--bf16", a.bf16, "--target (and --draft-logits) hold bfloat16 bit patterns");
  c->add_option("--drafts", a.drafts, "draft token ids .npy [B, K] (integers in [0, V))")
      ->required()
      ->type_name("FILE");
  auto* probs = c->add_option("--draft-probs", a.draft_probs,
                              "the draft's probabilities .npy [B K, V] float32 in [0, 1] "
                              "(default: deterministic drafts)")
                    ->type_name("FILE");
  c->add_option("--draft-logits", a.draft_logits,
                "the draft's logits .npy [B K, V], processed with the same parameters")
      ->type_name("FILE")
      ->excludes(probs);
  c->add_option("--temperature", a.temperature, "temperature >= 0 of every request; 0 = greedy");
  c->add_option("--top-k", a.top_k, "top-k of every request; 0 = off");
  c->add_option("--top-p", a.top_p, "top-p of every request, in (0, 1]; 1 = off");
  c->add_option("--min-p", a.min_p, "min-p of every request, in [0, 1]; 0 = off");
  c->add_option("--seed", a.seed, "Philox key of every request");
  c->add_option("--step", a.step, "Philox counter (the decoding step)");
  c->add_option("--threads", a.threads, "CPU threads; 0 = all (results never depend on it)")
      ->check(kInteger)
      ->check(CLI::Range(0, kMaxCpuThreads));
}

int run_verify_chain(const ChainArgs& a) {
  const LogitsData target = load_logits(a.target, a.bf16);
  const NpyArray d = read_npy(a.drafts);
  if (d.rank() != 2 || !npy_is_integer(d.type()))
    throw UsageError(a.drafts + ": --drafts must be a 2-D integer array [B, K], not " +
                     std::string(npy_type_name(d.type())) + " " + shape_string(d.shape()));
  const int64_t b = d.shape()[0], k = d.shape()[1];
  if (k > kMaxDrafts)
    throw UsageError(a.drafts + ": K = " + std::to_string(k) + " drafts a request (at most " +
                     std::to_string(kMaxDrafts) + ")");
  if (target.batch != b * (k + 1))
    throw UsageError(a.target + ": " + std::to_string(target.batch) + " rows, but --drafts " +
                     shape_string(d.shape()) + " needs B (K + 1) = " + std::to_string(b * (k + 1)));
  std::vector<int32_t> drafts(static_cast<size_t>(b * k));
  for (int64_t i = 0; i < b * k; ++i) {
    bool neg = false;
    uint64_t mag = 0;
    d.integer_at(i, &neg, &mag);
    if (neg || mag >= static_cast<uint64_t>(target.vocab))
      throw UsageError(a.drafts + ": request " + std::to_string(i / std::max<int64_t>(k, 1)) +
                       ": draft " + std::to_string(i % std::max<int64_t>(k, 1)) + " = " +
                       (neg ? "-" : "") + std::to_string(mag) +
                       " is outside [0, vocab = " + std::to_string(target.vocab) + ")");
    drafts[static_cast<size_t>(i)] = static_cast<int32_t>(mag);
  }
  std::vector<int64_t> offsets(static_cast<size_t>(b + 1));
  for (int64_t r = 0; r <= b; ++r) offsets[static_cast<size_t>(r)] = r * (k + 1);
  ChainRequest req;
  req.target = target.view();
  req.row_offsets = offsets.data();
  req.requests = b;
  req.draft_tokens = drafts.data();
  LogitsData draft;
  if (!a.draft_probs.empty() || !a.draft_logits.empty()) {
    const bool p = !a.draft_probs.empty();
    draft = load_logits(p ? a.draft_probs : a.draft_logits, p ? false : a.bf16);
    req.draft_kind = p ? DraftKind::kProbs : DraftKind::kLogits;
    req.draft = draft.view();
  }
  RowDefaults& df = req.params.defaults;
  df.temperature = a.temperature;
  df.top_k = a.top_k;
  df.top_p = a.top_p;
  df.min_p = a.min_p;
  df.seed = a.seed;
  df.step = a.step;
  ExecConfig cfg;
  cfg.backend = Backend::kCpu;
  cfg.cpu_threads = a.threads;
  const auto nb = static_cast<size_t>(b);
  std::vector<int32_t> accepted(nb), tokens(static_cast<size_t>(target.batch)), status(nb);
  std::vector<unsigned char> ws(verify_chain_workspace_size(req, cfg));
  const Status s = verify_chain(req, ChainOutputs{accepted.data(), tokens.data(), status.data()},
                                ws.data(), ws.size(), cfg);
  if (!s.ok()) {
    std::cerr << "lmsample verify-chain: " << s.message << "\n";
    return kExitError;
  }
  std::string text;
  for (size_t r = 0; r < nb; ++r) {
    nlohmann::ordered_json j;
    j["request"] = r;
    j["accepted"] = accepted[r];
    auto arr = nlohmann::ordered_json::array();
    for (int64_t i = 0; i <= k; ++i) {
      const int32_t t = tokens[r * static_cast<size_t>(k + 1) + static_cast<size_t>(i)];
      if (t >= 0) arr.push_back(t);
    }
    j["tokens"] = std::move(arr);
    j["status"] = row_status_name(status[r]);
    text += j.dump();
    text += '\n';
  }
  std::cout << text << std::flush;
  return kExitOk;
}

std::unique_ptr<Executor> make_executor(const std::string& backend, int threads,
                                        const std::string& gpu_keys = "auto") {
  Backend b = Backend::kAuto;
  if (!parse_backend(backend, &b)) throw UsageError("--backend: unknown backend '" + backend + "'");
  Status st;
  auto ex = Executor::create(b, threads, &st);
  if (!ex) throw UsageError(st.message);
  ex->set_gpu_keys(gpu_keys == "stream"    ? GpuKeys::kStream
                   : gpu_keys == "on-chip" ? GpuKeys::kOnChip
                                           : GpuKeys::kAuto);
  return ex;
}

// Rows [r0, r0 + n) of a request as their own (every per-row array and list offset moved on).
Request slice_request(const Request& req, int64_t r0, int64_t n) {
  Request q = req;
  const size_t esize = req.logits.dtype == DType::kFloat32 ? 4 : 2;
  const int64_t stride = req.logits.row_stride == 0 ? req.logits.vocab : req.logits.row_stride;
  q.logits.data =
      static_cast<const char*>(req.logits.data) + static_cast<size_t>(r0 * stride) * esize;
  q.logits.batch = n;
  RowParams& p = q.params;
  const auto move = [r0](auto*& ptr) {
    if (ptr) ptr += r0;
  };
  move(p.temperature);
  move(p.top_k);
  move(p.top_p);
  move(p.min_p);
  move(p.repetition_penalty);
  move(p.frequency_penalty);
  move(p.presence_penalty);
  move(p.seed);
  move(p.step);
  move(p.substream);
  if (q.allowed_mask) q.allowed_mask += r0 * q.mask_row_words;
  for (SparseRows* l : {&q.logit_bias, &q.prompt_tokens, &q.output_tokens})
    if (l->offsets) l->offsets += r0;
  return q;
}
Outputs slice_outputs(const Outputs& out, int64_t r0, size_t top_n) {
  Outputs o = out;
  o.tokens += r0;
  o.status += r0;
  if (o.kept) o.kept += r0;
  if (o.logprob) o.logprob += r0;
  if (o.top_ids) o.top_ids += static_cast<size_t>(r0) * top_n;
  if (o.top_logprobs) o.top_logprobs += static_cast<size_t>(r0) * top_n;
  return o;
}
// A library message about a block's rows ("row 3: ...") with the row numbered in the whole batch.
std::string renumber_rows(const std::string& msg, int64_t r0) {
  if (r0 == 0 || msg.rfind("row ", 0) != 0) return msg;
  size_t end = 4;
  while (end < msg.size() && msg[end] >= '0' && msg[end] <= '9') ++end;
  if (end == 4) return msg;
  return "row " + std::to_string(std::stoll(msg.substr(4, end - 4)) + r0) + msg.substr(end);
}

int run_sample(SampleArgs& a) {
  const LogitsData logits = load_logits(a.logits, a.bf16);
  const int64_t batch = logits.batch;
  for (auto& p : a.params) p->load(batch);
  if (a.seed_per_row_opt->count()) {
    const uint64_t base = parse_u64(a.seed_per_row, "--seed-per-row");
    std::vector<uint64_t>& seeds = a.p("seed").u64;
    seeds.resize(static_cast<size_t>(batch));
    for (size_t r = 0; r < seeds.size(); ++r) seeds[r] = base + r;
  }

  Request req;
  req.logits = logits.view();
  RowParams& rp = req.params;
  rp.temperature = a.p("temperature").ptr(a.p("temperature").f);
  rp.top_k = a.p("top-k").ptr(a.p("top-k").i32);
  rp.top_p = a.p("top-p").ptr(a.p("top-p").f);
  rp.min_p = a.p("min-p").ptr(a.p("min-p").f);
  rp.repetition_penalty = a.p("repetition-penalty").ptr(a.p("repetition-penalty").f);
  rp.frequency_penalty = a.p("frequency-penalty").ptr(a.p("frequency-penalty").f);
  rp.presence_penalty = a.p("presence-penalty").ptr(a.p("presence-penalty").f);
  rp.seed = a.seed_per_row_opt->count() ? a.p("seed").u64.data() : a.p("seed").ptr(a.p("seed").u64);
  rp.step = a.p("step").ptr(a.p("step").u64);
  rp.substream = a.p("substream").ptr(a.p("substream").u32);

  TokenLists prompt, output;
  if (!a.prompt_npy.empty()) {
    prompt = token_lists(read_npy(a.prompt_npy), "--prompt-tokens-npy", batch);
    if (!prompt.tokens.empty())
      req.prompt_tokens = SparseRows{prompt.offsets.data(), prompt.tokens.data(), nullptr};
  }
  if (!a.output_npy.empty()) {
    output = token_lists(read_npy(a.output_npy), "--output-tokens-npy", batch);
    if (!output.tokens.empty())
      req.output_tokens = SparseRows{output.offsets.data(), output.tokens.data(), nullptr};
  }
  Bitmask mask;
  if (!a.mask_npy.empty()) {
    mask = bitmask_from_npy(read_npy(a.mask_npy), "--allowed-mask-npy", batch, logits.vocab);
    if (batch > 0) {
      req.allowed_mask = mask.words.data();
      req.mask_row_words = mask.row_words;
    }
  }
  req.top_logprobs = a.top_logprobs;

  const auto nb = static_cast<size_t>(batch);
  const auto nt = static_cast<size_t>(a.top_logprobs);
  std::vector<int32_t> tokens(nb), status(nb), kept(nb), top_ids(nb * nt);
  std::vector<float> logprob(nb), top_lp(nb * nt);
  Outputs out;
  out.tokens = tokens.data();
  out.status = status.data();
  out.kept = kept.data();
  out.logprob = logprob.data();
  if (nt) {
    out.top_ids = top_ids.data();
    out.top_logprobs = top_lp.data();
  }

  auto ex = make_executor(a.backend, a.threads, a.gpu_keys);
  if (batch == 0) {  // nothing to sample: no lines
    if (!a.tokens_out.empty()) write_npy(a.tokens_out, {0}, tokens.data());
    return kExitOk;
  }
  // Blocks of about 256 MiB of logits (LMSAMPLE_TOOL_BLOCK_MB overrides it), one call each: a
  // file larger than memory is sampled as its rows are mapped in, each block's pages are given
  // back after it, and progress goes to stderr when there is more than one block. Results do
  // not depend on the blocks (a row's token is a function of the row alone).
  static const int64_t block_mb = [] {
    const char* e = std::getenv("LMSAMPLE_TOOL_BLOCK_MB");
    return e && std::atoll(e) > 0 ? std::atoll(e) : int64_t{256};
  }();
  const int64_t row_bytes = logits.vocab * (logits.dtype == DType::kFloat32 ? 4 : 2);
  const int64_t block = std::max<int64_t>(1, (block_mb << 20) / row_bytes);
  Status s = Status::Ok();
  int64_t bad_calls = 0;  // calls that reported bad rows
  for (int64_t r0 = 0; r0 < batch; r0 += block) {
    const int64_t n = std::min(block, batch - r0);
    const Status bs = ex->run(slice_request(req, r0, n), slice_outputs(out, r0, nt));
    if (!bs.ok() && bs.code != Code::kInvalidRowParameter) {
      std::cerr << "lmsample sample: " << a.logits << ": " << renumber_rows(bs.message, r0) << "\n";
      return kExitError;
    }
    if (bs.code == Code::kInvalidRowParameter && s.ok())
      s = Status{bs.code, renumber_rows(bs.message, r0)};
    if (bs.code == Code::kInvalidRowParameter) ++bad_calls;
    logits.release(r0, n);
    if (block < batch)
      std::cerr << "lmsample sample: " << std::min(r0 + n, batch) << " of " << batch << " rows\n";
  }
  // (bad rows in several blocks: the message is made from the statuses below)
  if (bad_calls > 1) s.message.clear();
  bool bad_rows = s.code == Code::kInvalidRowParameter;
  std::string text;
  for (size_t r = 0; r < nb; ++r) {
    nlohmann::ordered_json j;
    j["row"] = r;
    j["token"] = tokens[r];
    j["status"] = row_status_name(status[r]);
    j["kept"] = kept[r];
    if (status[r] >= kRowBadTemperature) bad_rows = true;
    if (a.logprobs) j["logprob"] = json_float(logprob[r]);
    if (nt) {
      auto arr = nlohmann::ordered_json::array();
      for (size_t k = 0; k < nt; ++k) {
        const int32_t id = top_ids[r * nt + k];
        if (id < 0) continue;
        nlohmann::ordered_json e;
        e["token"] = id;
        e["logprob"] = json_float(top_lp[r * nt + k]);
        arr.push_back(std::move(e));
      }
      j["top_logprobs"] = std::move(arr);
    }
    text += j.dump();
    text += '\n';
  }
  // (--tokens-out first: a problem with it is an error before any row is printed)
  if (!a.tokens_out.empty()) write_npy(a.tokens_out, {batch}, tokens.data());
  std::cout << text << std::flush;
  if (bad_rows) {
    std::string msg = s.message;
    if (msg.empty()) {  // GPU backends report bad rows through the statuses only
      size_t first = nb, count = 0;
      for (size_t r = 0; r < nb; ++r) {
        if (status[r] >= kRowBadTemperature) {
          if (first == nb) first = r;
          ++count;
        }
      }
      const std::string name = row_status_name(status[first]);
      msg = "row " + std::to_string(first) + ": invalid " + name.substr(name.find('_') + 1) +
            " (status " + name + ")";
      if (count > 1)
        msg += " (and " + std::to_string(count - 1) + " more bad rows; see the row statuses)";
    }
    std::cerr << "lmsample sample: invalid row parameters: " << msg << "\n";
    return kExitBadRows;
  }
  return kExitOk;
}

// ---- timing helpers ----

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Times `repeats` launches of a prepared executor (after `warmup` untimed ones); microseconds.
std::vector<double> time_launches(Executor& ex, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) {
    const Status s = ex.launch();
    if (!s.ok()) throw UsageError("sample() failed: " + s.message);
  }
  std::vector<double> us;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const Status s = ex.launch();
    const auto t1 = std::chrono::steady_clock::now();
    if (!s.ok()) throw UsageError("sample() failed: " + s.message);
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return us;
}

std::string fmt_us(double us) {
  char buf[64];
  if (us >= 10000.0)
    std::snprintf(buf, sizeof buf, "%.2f ms", us / 1000.0);
  else
    std::snprintf(buf, sizeof buf, "%.1f us", us);
  return buf;
}

struct Setting {
  std::string name;
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition = 1.0f;
  bool history = false;
};

// Per-row parameter arrays for one setting.
struct SettingArrays {
  std::vector<float> t, p, mp, rep;
  std::vector<int32_t> k;
  std::vector<uint64_t> seed, step;
  void fill(const Setting& s, int64_t batch, uint64_t step_value) {
    const auto n = static_cast<size_t>(batch);
    t.assign(n, s.temperature);
    p.assign(n, s.top_p);
    mp.assign(n, s.min_p);
    rep.assign(n, s.repetition);
    k.assign(n, s.top_k);
    seed.resize(n);
    for (size_t i = 0; i < n; ++i) seed[i] = 1000 + i;
    step.assign(n, step_value);
  }
  void apply(Request& req) const {
    req.params.temperature = t.data();
    req.params.top_p = p.data();
    req.params.min_p = mp.data();
    req.params.repetition_penalty = rep.data();
    req.params.top_k = k.data();
    req.params.seed = seed.data();
    req.params.step = step.data();
  }
};

// ---- demo ----

struct DemoArgs {
  int64_t batch = 32;
  int64_t vocab = 151936;
  int threads = 0;
  std::string backend = "auto";
  int repeats = 7;
};

int run_demo(const DemoArgs& a) {
  if (a.batch < 1) throw UsageError("--batch must be >= 1");
  if (a.vocab < 1 || a.vocab > kMaxVocab) throw UsageError("--vocab must be in [1, 2^24]");
  check_synthetic_size(a.batch, a.vocab);
  auto ex = make_executor(a.backend, a.threads);
  std::cout << "lmsample " << LMSAMPLE_TOOL_VERSION
            << " demo: synthetic LLM logits, B = " << a.batch << " rows x V = " << a.vocab
            << (a.vocab == 151936 ? " tokens (Qwen2's vocabulary size), fp32\n"
                                  : " tokens, fp32\n");
  std::cout << "backend: " << ex->describe() << "\n";
  const auto t0 = std::chrono::steady_clock::now();
  const SyntheticBatch sb = make_synthetic_batch(a.batch, a.vocab, 2024);
  const double gen_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  int64_t n_llm = 0, n_peaked = 0, flat_row = -1, mask_row = -1, allowed = 0;
  for (int64_t r = 0; r < a.batch; ++r) {
    const std::string& k = sb.kind[static_cast<size_t>(r)];
    if (k == "llm") ++n_llm;
    if (k == "peaked") ++n_peaked;
    if (k == "flat") flat_row = r;
    if (k == "bitmask") mask_row = r;
  }
  if (mask_row >= 0)
    for (int64_t w = 0; w < sb.mask_words; ++w)
      allowed += __builtin_popcount(sb.mask[static_cast<size_t>(mask_row * sb.mask_words + w)]);
  std::cout << "rows: " << n_llm
            << " heavy-tailed (logit = a - b ln(rank+1) + noise, random ranks)";
  if (n_peaked) std::cout << ", " << n_peaked << " peaked (rows 1-2)";
  if (flat_row >= 0) std::cout << ", 1 flat (row " << flat_row << ", all logits equal)";
  if (mask_row >= 0)
    std::cout << ", 1 grammar-constrained (row " << mask_row << ", bitmask allows " << allowed
              << " tokens)";
  std::cout << "; generated in " << std::fixed;
  std::cout.precision(0);
  std::cout << gen_ms << " ms\n";
  std::cout.unsetf(std::ios::fixed);
  std::cout << "every row: seed 1000 + row, step 0; timings: median of " << a.repeats
            << " calls (steady_clock)\n\n";

  const std::vector<Setting> settings = {
      {"greedy (T = 0)", 0.0f, 0, 1.0f, 0.0f, 1.0f, false},
      {"T = 0.7, top-p 0.9", 0.7f, 0, 0.9f, 0.0f, 1.0f, false},
      {"T = 1, top-k 50, top-p 0.9", 1.0f, 50, 0.9f, 0.0f, 1.0f, false},
      {"T = 1, min-p 0.05", 1.0f, 0, 1.0f, 0.05f, 1.0f, false},
      {"T = 0.8, repetition penalty 1.1 (32-token history)", 0.8f, 0, 1.0f, 0.0f, 1.1f, true},
  };
  Request base;
  base.logits.data = sb.logits.data();
  base.logits.dtype = DType::kFloat32;
  base.logits.batch = a.batch;
  base.logits.vocab = a.vocab;
  if (!sb.mask.empty()) {
    base.allowed_mask = sb.mask.data();
    base.mask_row_words = sb.mask_words;
  }
  const auto nb = static_cast<size_t>(a.batch);
  const int show = static_cast<int>(std::min<int64_t>(a.batch, 8));
  for (const Setting& s : settings) {
    SettingArrays arr;
    arr.fill(s, a.batch, 0);
    Request req = base;
    arr.apply(req);
    if (s.history) {
      req.output_tokens = SparseRows{sb.history_offsets.data(), sb.history.data(), nullptr};
    }
    std::vector<int32_t> tokens(nb), status(nb), kept(nb);
    std::vector<float> logprob(nb);
    Outputs out;
    out.tokens = tokens.data();
    out.status = status.data();
    out.kept = kept.data();
    out.logprob = logprob.data();
    Status st = ex->prepare(req, out);
    if (st.ok()) st = ex->launch();
    if (st.ok()) st = ex->fetch();
    if (!st.ok()) throw UsageError("sample() failed: " + st.message);
    const std::vector<double> us = time_launches(*ex, 1, a.repeats);
    const double med = median(us);

    std::cout << s.name << "\n  tokens (rows 0-" << show - 1 << "):";
    for (int r = 0; r < show; ++r) std::cout << " " << tokens[static_cast<size_t>(r)];
    if (flat_row >= 0) std::cout << "; flat row: " << tokens[static_cast<size_t>(flat_row)];
    if (mask_row >= 0) {
      const int32_t t = tokens[static_cast<size_t>(mask_row)];
      const bool ok =
          t >= 0 &&
          ((sb.mask[static_cast<size_t>(mask_row * sb.mask_words + t / 32)] >> (t % 32)) & 1u);
      std::cout << "; constrained row: " << t << (ok ? " (allowed)" : " (NOT ALLOWED)");
    }
    std::vector<int32_t> ks(kept);
    std::sort(ks.begin(), ks.end());
    std::cout << "\n  kept: rows 0-" << show - 1 << ":";
    for (int r = 0; r < show; ++r) std::cout << " " << kept[static_cast<size_t>(r)];
    std::cout << "; min " << ks.front() << ", median " << ks[ks.size() / 2] << ", max "
              << ks.back();
    if (flat_row >= 0) std::cout << "; flat row " << kept[static_cast<size_t>(flat_row)];
    if (s.history) {
      auto repeats = [&](const std::vector<int32_t>& toks) {
        int64_t n = 0;
        for (size_t r = 0; r < nb; ++r) {
          for (int64_t j = sb.history_offsets[r]; j < sb.history_offsets[r + 1]; ++j) {
            if (sb.history[static_cast<size_t>(j)] == toks[r]) {
              ++n;
              break;
            }
          }
        }
        return n;
      };
      // The same rows without the penalty, for comparison (untimed).
      SettingArrays plain;
      Setting p = s;
      p.repetition = 1.0f;
      plain.fill(p, a.batch, 0);
      Request preq = req;
      plain.apply(preq);
      std::vector<int32_t> ptokens(nb), pstatus(nb);
      Outputs pout;
      pout.tokens = ptokens.data();
      pout.status = pstatus.data();
      const Status ps = ex->run(preq, pout);
      std::cout << "\n  rows whose token is in their history: " << repeats(tokens) << " of "
                << a.batch;
      if (ps.ok()) std::cout << " (without the penalty: " << repeats(ptokens) << ")";
    }
    std::cout << "\n  time: " << fmt_us(med) << " per call, "
              << fmt_us(med / static_cast<double>(a.batch)) << " per row\n\n";
  }
  std::cout << "Run `lmsample verify` to check this machine's results against the reference.\n";
  return kExitOk;
}

// ---- bench ----

struct BenchArgs {
  int64_t vocab = 151936;
  int64_t batch = 32;
  int threads = 0;
  std::string backend = "auto";
  std::string dtype = "fp32";
  int repeats = 20;
  int warmup = 3;
  std::string gpu_keys = "auto";
};

int run_bench(const BenchArgs& a) {
  if (a.batch < 1) throw UsageError("--batch must be >= 1");
  if (a.vocab < 1 || a.vocab > kMaxVocab) throw UsageError("--vocab must be in [1, 2^24]");
  check_synthetic_size(a.batch, a.vocab);
  auto ex = make_executor(a.backend, a.threads, a.gpu_keys);
  const SyntheticBatch sb = make_synthetic_batch(a.batch, a.vocab, 7, false);
  std::vector<uint16_t> half;
  Request base;
  base.logits.batch = a.batch;
  base.logits.vocab = a.vocab;
  if (a.dtype == "fp32") {
    base.logits.dtype = DType::kFloat32;
    base.logits.data = sb.logits.data();
  } else {
    half = a.dtype == "bf16" ? to_bf16(sb.logits) : to_fp16(sb.logits);
    base.logits.dtype = a.dtype == "bf16" ? DType::kBFloat16 : DType::kFloat16;
    base.logits.data = half.data();
  }
  std::cout << "lmsample " << LMSAMPLE_TOOL_VERSION << " bench: V = " << a.vocab
            << ", B = " << a.batch << ", " << a.dtype << " heavy-tailed synthetic logits\n"
            << "backend: " << ex->describe() << "; median of " << a.repeats << " calls after "
            << a.warmup << " warm-up calls (steady_clock)\n\n";
  const std::vector<Setting> settings = {
      {"greedy", 0.0f, 0, 1.0f, 0.0f, 1.0f, false},
      {"top-k 50 + top-p 0.9", 1.0f, 50, 0.9f, 0.0f, 1.0f, false},
      {"top-p 0.9", 1.0f, 0, 0.9f, 0.0f, 1.0f, false},
      {"min-p 0.05", 1.0f, 0, 1.0f, 0.05f, 1.0f, false},
      {"temperature 0.8", 0.8f, 0, 1.0f, 0.0f, 1.0f, false},
  };
  char line[160];
  std::snprintf(line, sizeof line, "%-24s %14s %14s %14s\n", "setting", "per call", "per row",
                "min per call");
  std::cout << line;
  const auto nb = static_cast<size_t>(a.batch);
  for (const Setting& s : settings) {
    SettingArrays arr;
    arr.fill(s, a.batch, 3);
    Request req = base;
    arr.apply(req);
    std::vector<int32_t> tokens(nb), status(nb);
    Outputs out;
    out.tokens = tokens.data();
    out.status = status.data();
    const Status st = ex->prepare(req, out);
    if (!st.ok()) throw UsageError("sample() failed: " + st.message);
    const std::vector<double> us = time_launches(*ex, a.warmup, a.repeats);
    const double med = median(us);
    std::snprintf(line, sizeof line, "%-24s %14s %14s %14s\n", s.name.c_str(), fmt_us(med).c_str(),
                  fmt_us(med / static_cast<double>(a.batch)).c_str(),
                  fmt_us(*std::min_element(us.begin(), us.end())).c_str());
    std::cout << line;
  }
  return kExitOk;
}

// ---- verify ----

struct VerifyArgs {
  std::string backend = "auto";
  int threads = 0;
  bool quick = false;
  bool list = false;
  std::string filter;
};

int run_verify_command(const VerifyArgs& a) {
  if (a.list) {
    for (const auto& n : verify_check_names(a.quick)) std::cout << n << "\n";
    return kExitOk;
  }
  if (!a.filter.empty()) {  // a name that matches no check is a usage error, not a failed check
    bool any = false;
    for (const auto& n : verify_check_names(a.quick))
      any = any || n.find(a.filter) != std::string::npos;
    if (!any)
      throw UsageError("--only '" + a.filter +
                       "' matches no check's name (`lmsample verify --list` lists them)");
  }
  VerifyOptions o;
  if (!parse_backend(a.backend, &o.backend))
    throw UsageError("--backend: unknown backend '" + a.backend + "'");
  o.threads = a.threads;
  o.quick = a.quick;
  o.filter = a.filter;
  o.log = &std::cout;
  std::cout << "lmsample " << LMSAMPLE_TOOL_VERSION << " verify" << (a.quick ? " --quick" : "")
            << "\n";
  const auto t0 = std::chrono::steady_clock::now();
  const VerifyReport rep = run_verify(o);
  if (!rep.error.empty()) {
    std::cerr << "lmsample verify: " << rep.error << "\n";
    return kExitError;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t passed = 0;
  for (const auto& c : rep.checks) passed += c.passed;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", secs);
  std::cout << (rep.passed() ? "PASS" : "FAIL") << ": " << passed << " of " << rep.checks.size()
            << " checks passed on " << rep.backend << " in " << buf << " s\n";
  if (rep.checks.empty())
    std::cerr << "lmsample verify: no check matches --only '" << a.filter << "'\n";
  return rep.passed() ? kExitOk : kExitCheckFailed;
}

std::string version_text() {
  std::string s = std::string("lmsample ") + LMSAMPLE_TOOL_VERSION + " (library " +
                  lmsample::version() + ", contract version " +
                  std::to_string(lmsample::contract_version()) + "; backends:";
  s += " cpu";
  if (backend_available(Backend::kCuda)) s += ", cuda";
  s += ")";
  return s;
}

int main_impl(int argc, char** argv) {
  CLI::App app{
      "lmsample: LLM token sampling, logits [B, V] -> token ids, with the same bits on every "
      "backend, batch size, row position and thread count (docs/contract.md).",
      "lmsample"};
  app.set_version_flag("--version", version_text(), "print the version and the usable backends");
  app.require_subcommand(1);
  app.footer(
      "Run `lmsample SUBCOMMAND --help` for a subcommand's options.\n"
      "Exit status: 0 success; 1 error (message on stderr); 2 `sample`: some rows had invalid\n"
      "parameters; 3 `verify`: a check failed; CLI errors use CLI11's codes (> 100).");

  SampleArgs sa;
  add_sample_command(app, sa);

  DemoArgs da;
  auto* demo = app.add_subcommand(
      "demo",
      "Sample a Qwen2-sized synthetic batch (V = 151936) under typical settings and print tokens, "
      "kept-set sizes and timings; needs no input");
  demo->add_option("--batch", da.batch, "rows (default 32)")->check(kInteger);
  demo->add_option("--vocab", da.vocab, "vocabulary size (default 151936)")->check(kInteger);
  demo->add_option("--threads", da.threads, "CPU threads; 0 = all")
      ->check(kInteger)
      ->check(CLI::Range(0, kMaxCpuThreads));
  demo->add_option("--backend", da.backend,
                   "auto | cpu | cuda (hip: refused, the tool drives CUDA devices only)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "hip"}));
  demo->add_option("--repeats", da.repeats, "timed calls per setting (default 7)")
      ->check(kInteger)
      ->check(CLI::Range(1, 100000));

  VerifyArgs va;
  auto* verify = app.add_subcommand(
      "verify",
      "Self-check this machine: outputs equal the reference implementation bit for bit, sampled "
      "frequencies fit the exact distributions (chi-square, p > 1e-4), results do not depend on "
      "threads, batch size or row position, and errors are reported as specified");
  verify
      ->add_option("--backend", va.backend,
                   "auto | cpu | cuda (hip: refused, the tool drives CUDA devices only)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "hip"}));
  verify->add_option("--threads", va.threads, "CPU threads of the baseline runs; 0 = all")
      ->check(kInteger)
      ->check(CLI::Range(0, kMaxCpuThreads));
  verify->add_flag("--quick", va.quick, "fewer rows and draws (a few seconds)");
  verify->add_option("--only", va.filter, "run only the checks whose name contains this text");
  verify->add_flag("--list", va.list, "list the checks and exit");
  verify->footer(
      "Prints one PASS/FAIL line per check and a summary; exit status 3 if any check fails.\n"
      "Deterministic: the data, seeds and steps are fixed, so a result is reproducible.");

  ChainArgs ca;
  add_verify_chain_command(app, ca);

  BenchArgs ba;
  auto* bench = app.add_subcommand(
      "bench", "Time sample() for typical settings (median per call and per row)");
  bench->add_option("--vocab", ba.vocab, "vocabulary size (default 151936)")->check(kInteger);
  bench->add_option("--batch", ba.batch, "rows (default 32)")->check(kInteger);
  bench->add_option("--threads", ba.threads, "CPU threads; 0 = all")
      ->check(kInteger)
      ->check(CLI::Range(0, kMaxCpuThreads));
  bench
      ->add_option("--backend", ba.backend,
                   "auto | cpu | cuda (hip: refused, the tool drives CUDA devices only)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "hip"}));
  add_gpu_keys_option(bench, ba.gpu_keys);
  bench->add_option("--dtype", ba.dtype, "fp32 | bf16 | fp16 (default fp32)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  bench->add_option("--repeats", ba.repeats, "timed calls per setting (default 20)")
      ->check(kInteger)
      ->check(CLI::Range(1, 1000000));
  bench->add_option("--warmup", ba.warmup, "untimed calls first (default 3)")
      ->check(kInteger)
      ->check(CLI::Range(0, 1000000));

  // a first argument that is no option and no subcommand: say so (CLI11 calls it a missing one)
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known = known || sub->get_name() == argv[1];
    if (!known) {
      std::cerr << "lmsample: unknown subcommand '" << argv[1]
                << "' (sample, verify-chain, demo, verify or bench; lmsample --help says more)\n";
      return static_cast<int>(CLI::ExitCodes::ExtrasError);
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError& e) {
    // (CLI11 lists them last first): in the order given
    std::vector<std::string> extras;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      for (const std::string& r : app.remaining(true))
        if (r == arg && std::find(extras.begin(), extras.end(), arg) == extras.end())
          extras.push_back(arg);
    }
    std::cerr << "The following arguments were not expected:";
    for (const std::string& x : extras) std::cerr << " " << x;
    std::cerr << "\nRun with --help for more information.\n";
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const char* cmd = "lmsample";
  // A subcommand's output is lost if stdout cannot take it (a full disk, a closed pipe): that is
  // an error, whatever the subcommand returned.
  const auto written = [&cmd](int rc) {
    errno = 0;
    std::cout.flush();
    if (std::cout.good()) return rc;
    std::cerr << cmd << ": writing to standard output failed"
              << (errno ? std::string(": ") + std::strerror(errno) : std::string()) << "\n";
    return kExitError;
  };
  try {
    if (app.got_subcommand("sample")) {
      cmd = "lmsample sample";
      return written(run_sample(sa));
    }
    if (app.got_subcommand("demo")) {
      cmd = "lmsample demo";
      return written(run_demo(da));
    }
    if (app.got_subcommand("verify")) {
      cmd = "lmsample verify";
      return written(run_verify_command(va));
    }
    if (app.got_subcommand("verify-chain")) {
      cmd = "lmsample verify-chain";
      return written(run_verify_chain(ca));
    }
    if (app.got_subcommand("bench")) {
      cmd = "lmsample bench";
      return written(run_bench(ba));
    }
  } catch (const NpyError& e) {
    std::cerr << cmd << ": " << e.what() << "\n";
    return kExitError;
  } catch (const UsageError& e) {
    std::cerr << cmd << ": " << e.what() << "\n";
    return kExitError;
  } catch (const std::bad_alloc&) {
    std::cerr << cmd << ": out of memory\n";
    return kExitError;
  } catch (const std::exception& e) {
    std::cerr << cmd << ": error: " << e.what() << "\n";
    return kExitError;
  }
  return kExitError;
}

}  // namespace
}  // namespace lmsample::tool

int main(int argc, char** argv) {
  try {
    return lmsample::tool::main_impl(argc, argv);
  } catch (...) {
    std::cerr << "lmsample: unexpected error\n";
    return 1;
  }
}

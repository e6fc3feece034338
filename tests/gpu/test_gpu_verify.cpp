// Speculative decoding's verification on the CUDA backend against the CPU backend, bit for bit
// (docs/contract.md, section 8): chains with every draft kind and trees, over the GPU kit's random
// rows (every dtype and layout, bitmasks, bias, penalty histories, special rows, bad parameters),
// each key mode; and what only the device can check (offsets, draft ids, probabilities, trees)
// reported in each request's status. The CPU backend's own statistics (tests/test_speculative.cpp)
// then hold for the GPU's results too.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/port.hpp"
#include "gpu_test_util.hpp"

namespace lmsgpu {
namespace {

using lmsample::ChainOutputs;
using lmsample::ChainRequest;
using lmsample::DraftKind;
using lmsample::TreeOutputs;
using lmsample::TreeRequest;

template <typename T>
DevBuf upload(const std::vector<T>& v) {
  DevBuf d(std::max<size_t>(v.size() * sizeof(T), 1));
  if (!v.empty())
    LMS_CUDA(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <typename T>
std::vector<T> download(const DevBuf& d, size_t n) {
  std::vector<T> v(n);
  if (n) LMS_CUDA(cudaMemcpy(v.data(), d.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// The request-level parts of a verification taken from a sampling request of N rows: its logits,
// bitmask (per row), and its first B entries of parameters, bias and histories (per request).
template <typename Req>
void take_rows(Req& v, const lmsample::Request& r, int64_t requests) {
  v.target = r.logits;
  v.requests = requests;
  v.params = r.params;
  v.allowed_mask = r.allowed_mask;
  v.mask_row_words = r.mask_row_words;
  v.logit_bias = r.logit_bias;
  v.prompt_tokens = r.prompt_tokens;
  v.output_tokens = r.output_tokens;
}

struct Outs {
  std::vector<int32_t> accepted, tokens, status, path;
  std::vector<float> logprobs;
};

// Differences between the CPU's and the GPU's outputs ("" when bit-identical; logprobs within
// 1e-6 as the contract says).
std::string diff(const Outs& c, const Outs& g, const std::vector<int64_t>& off) {
  std::string d;
  const auto add = [&](const std::string& s) {
    if (d.size() < 2000) d += s + "\n";
  };
  for (size_t b = 0; b + 1 < off.size(); ++b) {
    const std::string who = "request " + std::to_string(b) + ": ";
    if (c.accepted[b] != g.accepted[b] || c.status[b] != g.status[b])
      add(who + "accepted/status cpu " + std::to_string(c.accepted[b]) + "/" +
          std::to_string(c.status[b]) + " gpu " + std::to_string(g.accepted[b]) + "/" +
          std::to_string(g.status[b]));
    for (int64_t r = off[b]; r < off[b + 1]; ++r) {
      const size_t i = static_cast<size_t>(r);
      if (c.tokens[i] != g.tokens[i])
        add(who + "row " + std::to_string(r) + " token cpu " + std::to_string(c.tokens[i]) +
            " gpu " + std::to_string(g.tokens[i]));
      if (!c.path.empty() && c.path[i] != g.path[i])
        add(who + "row " + std::to_string(r) + " path cpu " + std::to_string(c.path[i]) + " gpu " +
            std::to_string(g.path[i]));
      const float a = c.logprobs[i], e = g.logprobs[i];
      const bool same = a == e || (std::isinf(a) && std::isinf(e)) ||
                        std::fabs(a - e) <= 1e-6f * std::max(1.0f, std::fabs(a));
      if (!same)
        add(who + "row " + std::to_string(r) + " logprob cpu " + std::to_string(a) + " gpu " +
            std::to_string(e));
    }
  }
  return d;
}

// The largest logit's token of row `row` of hb (as loaded: no bitmask or bias).
int64_t argmax_of(const HostBatch& hb, int64_t row) {
  float best = -kInf;
  int64_t at = 0;
  for (int64_t i = 0; i < hb.vocab; ++i) {
    const unsigned char* p = hb.logits.data() + static_cast<size_t>(hb.base + row * hb.stride + i) *
                                                    dtype_bytes(hb.dtype);
    float x = 0.0f;
    if (hb.dtype == DType::kFloat32) {
      std::memcpy(&x, p, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, p, 2);
      x = hb.dtype == DType::kBFloat16 ? lmsample::core::bf16_to_float(h)
                                       : lmsample::core::f16_to_float(h);
    }
    if (x > best) {
      best = x;
      at = i;
    }
  }
  return at;
}

// A draft token for target row `row`: the row's argmax (often accepted), or any token.
int32_t draft_for(const HostBatch& hb, int64_t row, Rng& rng) {
  if (rng.chance(0.5)) return static_cast<int32_t>(argmax_of(hb, row));
  return static_cast<int32_t>(rng.range(0, hb.vocab - 1));
}

class GpuVerify : public GpuTest {
 protected:
  // Random requests (K_b in [0, kmax]) over a random batch of cfg's kind of rows; CPU and GPU
  // (each key mode) compared, with ChainRequest::max_drafts = cap. Returns the requests compared.
  int64_t chain_group(GroupCfg cfg, int64_t requests, int kmax, DraftKind kind, bool logprobs,
                      int32_t cap = 0) {
    Rng rng(mix_seed(cfg.seed, 77));
    std::vector<int64_t> off{0};
    for (int64_t b = 0; b < requests; ++b) off.push_back(off.back() + 1 + rng.range(0, kmax));
    const int64_t n = off.back(), nd = n - requests, v = cfg.vocab;
    cfg.batch = n;
    const HostBatch hb = make_batch(cfg);
    std::vector<int32_t> drafts(static_cast<size_t>(nd));
    for (int64_t b = 0; b < requests; ++b)
      for (int64_t j = 0; j < off[b + 1] - off[b] - 1; ++j)
        drafts[static_cast<size_t>(off[b] - b + j)] = draft_for(hb, off[b] + j, rng);
    // draft rows: noisy copies of the target's (logits), or their softmax (probabilities)
    std::vector<float> draft(static_cast<size_t>(std::max<int64_t>(nd, 1) * v), 0.0f);
    for (int64_t b = 0; b < requests; ++b)
      for (int64_t j = 0; j < off[b + 1] - off[b] - 1; ++j) {
        float* d = draft.data() + (off[b] - b + j) * v;
        const float scale = static_cast<float>(rng.uniform(0.5, 3.0));
        for (int64_t i = 0; i < v; ++i) d[i] = rng.normal() * scale;
        d[drafts[static_cast<size_t>(off[b] - b + j)]] += 6.0f;
        if (kind == DraftKind::kProbs) {
          const float m = *std::max_element(d, d + v);
          double s = 0;
          for (int64_t i = 0; i < v; ++i) s += std::exp(static_cast<double>(d[i] - m));
          for (int64_t i = 0; i < v; ++i)
            d[i] = static_cast<float>(std::exp(static_cast<double>(d[i] - m)) / s);
          if (rng.chance(0.1)) std::fill(d, d + v, 0.0f);  // no mass: deterministic
        }
      }
    // Where the target has an odd layout, so do the draft rows (stride V + 5, one element in:
    // rows not 16-byte aligned), and draft logits take the target's dtype.
    const bool odd = cfg.layout.stride_extra != 0;
    const int64_t dstride = odd ? v + 5 : v, dbase = odd ? 1 : 0;
    const DType ddt = kind == DraftKind::kLogits && odd ? cfg.dtype : DType::kFloat32;
    std::vector<float> dstore32;
    std::vector<uint16_t> dstore16;
    const size_t dsize = static_cast<size_t>(dbase + std::max<int64_t>(nd, 1) * dstride);
    if (ddt == DType::kFloat32)
      dstore32.assign(dsize, 0.0f);
    else
      dstore16.assign(dsize, 0);
    for (int64_t d = 0; d < nd; ++d)
      for (int64_t i = 0; i < v; ++i) {
        const size_t at = static_cast<size_t>(dbase + d * dstride + i);
        const float x = draft[static_cast<size_t>(d * v + i)];
        if (ddt == DType::kFloat32)
          dstore32[at] = x;
        else
          dstore16[at] = ddt == DType::kBFloat16 ? float_to_bf16(x) : float_to_f16(x);
      }
    const auto make = [&](const lmsample::Request& rows, const int64_t* o, const int32_t* dt,
                          const void* dl) {
      ChainRequest c;
      take_rows(c, rows, requests);
      c.row_offsets = o;
      c.draft_tokens = dt;
      c.draft_kind = kind;
      if (kind != DraftKind::kDeterministic) {
        const size_t esize = ddt == DType::kFloat32 ? 4 : 2;
        c.draft = lmsample::Logits{static_cast<const unsigned char*>(dl) + dbase * esize, ddt, nd,
                                   v, odd ? dstride : 0};
      }
      c.max_drafts = cap;
      return c;
    };
    const void* host_draft = ddt == DType::kFloat32 ? static_cast<const void*>(dstore32.data())
                                                    : static_cast<const void*>(dstore16.data());
    // CPU
    Outs cpu;
    cpu.accepted.assign(static_cast<size_t>(requests), -7);
    cpu.status.assign(static_cast<size_t>(requests), -7);
    cpu.tokens.assign(static_cast<size_t>(n), -7);
    cpu.logprobs.assign(static_cast<size_t>(n), 7.0f);
    {
      const ChainRequest c = make(hb.request(), off.data(), drafts.data(), host_draft);
      lmsample::ExecConfig cc;
      std::vector<unsigned char> ws(lmsample::verify_chain_workspace_size(c, cc));
      const lmsample::Status s = lmsample::verify_chain(
          c,
          ChainOutputs{cpu.accepted.data(), cpu.tokens.data(), cpu.status.data(),
                       logprobs ? cpu.logprobs.data() : nullptr},
          ws.data(), ws.size(), cc);
      EXPECT_TRUE(s.ok()) << cfg.name << ": cpu: " << s.message;
      if (!s.ok()) return 0;
    }
    if (!logprobs) std::fill(cpu.logprobs.begin(), cpu.logprobs.end(), 7.0f);
    // GPU, each key mode
    const DeviceBatch db(hb);
    const DevBuf d_off = upload(off), d_drafts = upload(drafts);
    const DevBuf d_draft = ddt == DType::kFloat32 ? upload(dstore32) : upload(dstore16);
    const ChainRequest c =
        make(db.request(), d_off.as<int64_t>(), d_drafts.as<int32_t>(), d_draft.get());
    for (const lmsample::GpuKeys keys :
         {lmsample::GpuKeys::kAuto, lmsample::GpuKeys::kStream, lmsample::GpuKeys::kOnChip}) {
      lmsample::ExecConfig gc;
      gc.backend = lmsample::Backend::kCuda;
      gc.stream = stream_;
      gc.gpu_keys = keys;
      DevBuf acc(requests * 4), tok(n * 4), st(requests * 4), lp(n * 4);
      for (DevBuf* b : {&acc, &tok, &st, &lp}) LMS_CUDA(cudaMemset(b->get(), 0x7f, b->size()));
      void* ws = ws_.get(lmsample::verify_chain_workspace_size(c, gc));
      const lmsample::Status s = lmsample::verify_chain(
          c,
          ChainOutputs{acc.as<int32_t>(), tok.as<int32_t>(), st.as<int32_t>(),
                       logprobs ? lp.as<float>() : nullptr},
          ws, lmsample::verify_chain_workspace_size(c, gc), gc);
      EXPECT_TRUE(s.ok()) << cfg.name << ": gpu: " << s.message;
      if (!s.ok()) return 0;
      wait_stream(stream_, call_timeout_s(), cfg.name);
      Outs gpu;
      gpu.accepted = download<int32_t>(acc, requests);
      gpu.status = download<int32_t>(st, requests);
      gpu.tokens = download<int32_t>(tok, n);
      gpu.logprobs = logprobs ? download<float>(lp, n) : cpu.logprobs;
      const std::string d = diff(cpu, gpu, off);
      EXPECT_EQ(d, "") << cfg.name << " (" << requests << " requests, " << n << " rows, keys mode "
                       << static_cast<int>(keys) << ")";
    }
    return requests;
  }

  // Random trees (1 to 12 nodes) over cfg's rows; CPU and GPU compared (with
  // TreeRequest::max_depth the deepest node's depth where state_depth is set).
  int64_t tree_group(GroupCfg cfg, int64_t requests, bool logprobs, bool state_depth = false) {
    Rng rng(mix_seed(cfg.seed, 99));
    std::vector<int64_t> off{0};
    for (int64_t b = 0; b < requests; ++b) off.push_back(off.back() + rng.range(1, 12));
    const int64_t n = off.back();
    cfg.batch = n;
    const HostBatch hb = make_batch(cfg);
    std::vector<int32_t> parents(static_cast<size_t>(n)), toks(static_cast<size_t>(n), 0);
    for (int64_t b = 0; b < requests; ++b) {
      parents[static_cast<size_t>(off[b])] = -1;
      for (int64_t i = 1; i < off[b + 1] - off[b]; ++i) {
        const int64_t p = rng.chance(0.5) ? i - 1 : rng.range(0, i - 1);
        parents[static_cast<size_t>(off[b] + i)] = static_cast<int32_t>(p);
        // the parent's row's argmax, any token, or a sibling's (repeated) token
        int32_t x = draft_for(hb, off[b] + p, rng);
        if (i > 1 && rng.chance(0.15)) x = toks[static_cast<size_t>(off[b] + i - 1)];
        toks[static_cast<size_t>(off[b] + i)] = x;
      }
    }
    int32_t deepest = 0;
    if (state_depth)
      for (int64_t b = 0; b < requests; ++b) {
        std::vector<int32_t> depth(static_cast<size_t>(off[b + 1] - off[b]), 0);
        for (size_t i = 1; i < depth.size(); ++i) {
          depth[i] = depth[static_cast<size_t>(parents[static_cast<size_t>(off[b]) + i])] + 1;
          deepest = std::max(deepest, depth[i]);
        }
      }
    const auto make = [&](const lmsample::Request& rows, const int64_t* o, const int32_t* par,
                          const int32_t* tk) {
      TreeRequest t;
      take_rows(t, rows, requests);
      t.node_offsets = o;
      t.parents = par;
      t.tokens = tk;
      t.max_depth = deepest;
      return t;
    };
    Outs cpu;
    cpu.accepted.assign(static_cast<size_t>(requests), -7);
    cpu.status.assign(static_cast<size_t>(requests), -7);
    cpu.tokens.assign(static_cast<size_t>(n), -7);
    cpu.path.assign(static_cast<size_t>(n), -7);
    cpu.logprobs.assign(static_cast<size_t>(n), 7.0f);
    {
      const TreeRequest t = make(hb.request(), off.data(), parents.data(), toks.data());
      lmsample::ExecConfig cc;
      std::vector<unsigned char> ws(lmsample::verify_tree_workspace_size(t, cc));
      const lmsample::Status s = lmsample::verify_tree(
          t,
          TreeOutputs{cpu.accepted.data(), cpu.path.data(), cpu.tokens.data(), cpu.status.data(),
                      logprobs ? cpu.logprobs.data() : nullptr},
          ws.data(), ws.size(), cc);
      EXPECT_TRUE(s.ok()) << cfg.name << ": cpu: " << s.message;
      if (!s.ok()) return 0;
    }
    const DeviceBatch db(hb);
    const DevBuf d_off = upload(off), d_par = upload(parents), d_tok = upload(toks);
    const TreeRequest t =
        make(db.request(), d_off.as<int64_t>(), d_par.as<int32_t>(), d_tok.as<int32_t>());
    lmsample::ExecConfig gc;
    gc.backend = lmsample::Backend::kCuda;
    gc.stream = stream_;
    DevBuf acc(requests * 4), path(n * 4), tok(n * 4), st(requests * 4), lp(n * 4);
    for (DevBuf* b : {&acc, &path, &tok, &st, &lp}) LMS_CUDA(cudaMemset(b->get(), 0x7f, b->size()));
    const size_t wsb = lmsample::verify_tree_workspace_size(t, gc);
    const lmsample::Status s =
        lmsample::verify_tree(t,
                              TreeOutputs{acc.as<int32_t>(), path.as<int32_t>(), tok.as<int32_t>(),
                                          st.as<int32_t>(), logprobs ? lp.as<float>() : nullptr},
                              ws_.get(wsb), wsb, gc);
    EXPECT_TRUE(s.ok()) << cfg.name << ": gpu: " << s.message;
    if (!s.ok()) return 0;
    wait_stream(stream_, call_timeout_s(), cfg.name);
    Outs gpu;
    gpu.accepted = download<int32_t>(acc, requests);
    gpu.status = download<int32_t>(st, requests);
    gpu.tokens = download<int32_t>(tok, n);
    gpu.path = download<int32_t>(path, n);
    gpu.logprobs = logprobs ? download<float>(lp, n) : cpu.logprobs;
    EXPECT_EQ(diff(cpu, gpu, off), "")
        << cfg.name << " (" << requests << " trees, " << n << " nodes)";
    return requests;
  }
};

GroupCfg group(const std::string& name, DType dt, int64_t v, uint64_t seed, int idx) {
  GroupCfg g;
  g.name = name;
  g.dtype = dt;
  g.vocab = v;
  g.seed = mix_seed(base_seed(), seed * 131u + static_cast<uint64_t>(idx));
  g.mix.bad_token_id = 0.01;
  if (idx % 3 == 1) {  // odd layouts
    g.layout.stride_extra = 17;
    g.layout.base_offset = 3;
    g.layout.mask_extra_words = 2;
    g.layout.csr_base = 5;
  }
  if (idx % 4 == 2) g.mix.greedy = 0.5;
  if (idx % 5 == 3) {  // nothing rewrites a key: the rows may be streamed, drafts are no history
    g.mix.bias = g.mix.penalties = g.mix.bad_token_id = 0.0;
    g.mix.mask = 0.0;
  }
  if (idx % 5 == 4) {  // temperature alone (temperature_rows_kernel's rows)
    g.mix.bias = g.mix.penalties = g.mix.bad_token_id = g.mix.mask = 0.0;
    g.mix.top_k = g.mix.top_p = g.mix.min_p = 0.0;
  }
  return g;
}

// fp32 rows of the default mix with nothing special, masked, biased, penalised or bad: the
// device checks' batches, where only the structure under test may make a request fail.
GroupCfg plain_group(const std::string& name, int64_t v, uint64_t seed, int64_t batch) {
  GroupCfg g = group(name, DType::kFloat32, v, seed, 0);
  g.mix = Mix{};
  g.mix.special = g.mix.mask = g.mix.bias = g.mix.penalties = 0;
  g.mix.bad_param = g.mix.bad_token_id = 0;
  g.batch = batch;
  return g;
}

TEST_F(GpuVerify, ChainsMatchTheCpuBitForBit) {
  const int64_t reqs = small_mode() ? 6 : 40;
  int64_t total = 0;
  int idx = 0;
  // (V = 1003: the last thread of a residual chunk holds fewer than eight tokens)
  for (const int64_t v : {int64_t{1003}, int64_t{32000}, int64_t{151936}})
    for (const DType dt : {DType::kFloat32, DType::kBFloat16, DType::kFloat16})
      for (const DraftKind kind :
           {DraftKind::kDeterministic, DraftKind::kLogits, DraftKind::kProbs}) {
        if (v == 151936 && dt == DType::kFloat16 && kind != DraftKind::kLogits) continue;
        const std::string name = "chain V=" + std::to_string(v) + " " + dtype_name(dt) + " kind " +
                                 std::to_string(static_cast<int>(kind));
        const int kmax = idx % 2 ? 8 : 3;
        total += chain_group(group(name, dt, v, 1, idx), reqs, kmax, kind, idx % 2 == 0,
                             idx % 3 == 2 ? kmax : 0);
        ++idx;
      }
  summary(Compared{}, std::to_string(total) + " chain requests bit-identical (3 key modes each)");
}

TEST_F(GpuVerify, TreesMatchTheCpuBitForBit) {
  const int64_t reqs = small_mode() ? 6 : 40;
  int64_t total = 0;
  int idx = 0;
  for (const int64_t v : {int64_t{1000}, int64_t{32000}, int64_t{151936}})
    for (const DType dt : {DType::kFloat32, DType::kBFloat16}) {
      const std::string name = "tree V=" + std::to_string(v) + " " + dtype_name(dt);
      total += tree_group(group(name, dt, v, 2, idx), reqs, idx % 2 == 0, idx % 2 == 1);
      ++idx;
    }
  summary(Compared{}, std::to_string(total) + " tree requests bit-identical");
}

// The environment variable `name` set for a scope (the rounds' size is read on each call).
struct ScopedEnv {
  std::string name;
  ScopedEnv(const char* n, const char* value) : name(n) { setenv(n, value, 1); }
  ~ScopedEnv() { unsetenv(name.c_str()); }
};

// Large batches take their kept sets in rounds (verify_gpu.cu); forced here onto small ones, a
// position (or node) a round and two positions a round, with and without the stated bound on
// drafts or depth: still the CPU's bits. Every other group is temperature alone without
// logprobs, whose rows the temperature kernel computes and whose deterministic residuals come
// from its sub-chunk sums.
TEST_F(GpuVerify, RoundsMatchTheCpuBitForBit) {
  const int64_t reqs = small_mode() ? 6 : 24;
  int64_t chains = 0, trees = 0;
  for (const char* fill : {"1", "40"}) {
    const ScopedEnv env("LMSAMPLE_VERIFY_ROUND_ROWS", fill);
    int idx = 0;
    for (const int64_t v : {int64_t{1000}, int64_t{151936}})
      for (const DType dt : {DType::kFloat32, DType::kBFloat16}) {
        for (const DraftKind kind :
             {DraftKind::kDeterministic, DraftKind::kLogits, DraftKind::kProbs}) {
          const int gi = idx % 2 == 0 ? 4 : idx;  // (group() makes idx % 5 == 4 temperature alone)
          const std::string name = std::string("rounds of ") + fill +
                                   " chain V=" + std::to_string(v) + " " + dtype_name(dt) +
                                   " kind " + std::to_string(static_cast<int>(kind));
          chains += chain_group(group(name, dt, v, 4, gi), reqs, 4, kind, gi != 4 && gi % 3 == 0,
                                idx % 3 == 0 ? 0 : 4);
          ++idx;
        }
        const int gi = idx % 2 == 0 ? 4 : idx;
        const std::string name = std::string("rounds of ") + fill + " tree V=" + std::to_string(v) +
                                 " " + dtype_name(dt);
        trees += tree_group(group(name, dt, v, 5, gi), reqs, gi != 4, idx % 3 != 0);
        ++idx;
      }
  }
  summary(Compared{}, std::to_string(chains) + " chain and " + std::to_string(trees) +
                          " tree requests in rounds bit-identical");
}

// Batches of more than 4,096 requests (verify_kernel.cuh's kCheckInPrepare) check their offsets
// in a kernel of their own before verify_prepare_kernel; smaller ones in each CTA of it. Both
// give the CPU's bits, and offsets that do not add up make every request bad_draft in both.
TEST_F(GpuVerify, LargeBatchesCheckTheirOffsetsFirst) {
  const int64_t reqs = 4096 + 300;
  int64_t total = 0;
  int idx = 0;
  for (const DraftKind kind : {DraftKind::kDeterministic, DraftKind::kProbs}) {
    GroupCfg g = group("large batch kind " + std::to_string(static_cast<int>(kind)),
                       DType::kFloat32, 1000, 6, idx++);
    total += chain_group(g, reqs, 1, kind, false);
  }
  // offsets with one empty request among 4,400 of one row each
  const int64_t n = 4400, v = 1000;
  const HostBatch hb = make_batch(plain_group("large batch offsets", v, 7, n));
  const DeviceBatch db(hb);
  std::vector<int64_t> off(static_cast<size_t>(n) + 1);
  for (int64_t b = 0; b <= n; ++b) off[static_cast<size_t>(b)] = b;
  off[2000] = off[1999];  // request 1999 has no row, request 2000 two
  const DevBuf d_off = upload(off), d_dr = upload(std::vector<int32_t>{0});
  ChainRequest c;
  take_rows(c, db.request(), n);
  c.row_offsets = d_off.as<int64_t>();
  c.draft_tokens = d_dr.as<int32_t>();
  lmsample::ExecConfig gc;
  gc.backend = lmsample::Backend::kCuda;
  gc.stream = stream_;
  DevBuf acc(n * 4), tok(n * 4), st(n * 4);
  for (DevBuf* b : {&acc, &tok, &st}) LMS_CUDA(cudaMemset(b->get(), 0x7f, b->size()));
  const size_t wsb = lmsample::verify_chain_workspace_size(c, gc);
  const lmsample::Status s = lmsample::verify_chain(
      c, ChainOutputs{acc.as<int32_t>(), tok.as<int32_t>(), st.as<int32_t>(), nullptr},
      ws_.get(wsb), wsb, gc);
  ASSERT_TRUE(s.ok()) << s.message;
  wait_stream(stream_, call_timeout_s(), "large batch offsets");
  const std::vector<int32_t> status = download<int32_t>(st, n), tokens = download<int32_t>(tok, n);
  const std::vector<int32_t> accepted = download<int32_t>(acc, n);
  for (int64_t b = 0; b < n; ++b) {
    ASSERT_EQ(status[static_cast<size_t>(b)], lmsample::kRowBadDraft) << "request " << b;
    ASSERT_EQ(accepted[static_cast<size_t>(b)], 0) << "request " << b;
    ASSERT_EQ(tokens[static_cast<size_t>(b)], -1) << "row " << b;
  }
  summary(Compared{}, std::to_string(total) +
                          " chain requests in two batches above 4,096 bit-identical; bad offsets "
                          "make every request of 4,400 bad_draft");
}

// What the host cannot see: each bad request gets its status and -1 tokens; the others are
// verified as if alone.
TEST_F(GpuVerify, DeviceChecksReportEachRequestsStatus) {
  const int64_t v = 1000;
  const HostBatch hb = make_batch(plain_group("device checks", v, 3, 9));  // 3 requests, K = 2
  const DeviceBatch db(hb);
  lmsample::ExecConfig gc;
  gc.backend = lmsample::Backend::kCuda;
  gc.stream = stream_;
  const auto run_chain = [&](const std::vector<int64_t>& off, const std::vector<int32_t>& drafts,
                             DraftKind kind, const std::vector<float>& probs, int32_t cap = 0) {
    const DevBuf d_off = upload(off), d_dr = upload(drafts), d_p = upload(probs);
    ChainRequest c;
    take_rows(c, db.request(), 3);
    c.row_offsets = d_off.as<int64_t>();
    c.draft_tokens = d_dr.as<int32_t>();
    c.draft_kind = kind;
    if (kind != DraftKind::kDeterministic)
      c.draft = lmsample::Logits{d_p.get(), DType::kFloat32, 6, v, 0};
    c.max_drafts = cap;
    DevBuf acc(12), tok(36), st(12);
    const size_t wsb = lmsample::verify_chain_workspace_size(c, gc);
    const lmsample::Status s = lmsample::verify_chain(
        c, ChainOutputs{acc.as<int32_t>(), tok.as<int32_t>(), st.as<int32_t>(), nullptr},
        ws_.get(wsb), wsb, gc);
    EXPECT_TRUE(s.ok()) << s.message;
    wait_stream(stream_, call_timeout_s(), "device checks");
    Outs o;
    o.accepted = download<int32_t>(acc, 3);
    o.status = download<int32_t>(st, 3);
    o.tokens = download<int32_t>(tok, 9);
    return o;
  };
  const std::vector<int64_t> good{0, 3, 6, 9};
  const std::vector<int32_t> drafts{1, 2, 3, 4, 5, 6};
  const Outs ref = run_chain(good, drafts, DraftKind::kDeterministic, {});
  for (const int32_t s : ref.status) EXPECT_EQ(s, lmsample::kRowOk);
  // a draft id outside [0, V) in request 1
  std::vector<int32_t> bad_ids = drafts;
  bad_ids[3] = static_cast<int32_t>(v);
  Outs o = run_chain(good, bad_ids, DraftKind::kDeterministic, {});
  EXPECT_EQ(o.status[1], lmsample::kRowBadTokenId);
  EXPECT_EQ(o.accepted[1], 0);
  for (int r = 3; r < 6; ++r) EXPECT_EQ(o.tokens[r], -1);
  for (const int b : {0, 2}) {
    EXPECT_EQ(o.status[b], ref.status[b]);
    EXPECT_EQ(o.accepted[b], ref.accepted[b]);
    for (int r = 3 * b; r < 3 * b + 3; ++r) EXPECT_EQ(o.tokens[r], ref.tokens[r]) << "row " << r;
  }
  // a NaN draft probability in request 2's second draft row
  std::vector<float> probs(static_cast<size_t>(6 * v), 1.0f / static_cast<float>(v));
  probs[static_cast<size_t>(5 * v + 7)] = kNaN;
  o = run_chain(good, drafts, DraftKind::kProbs, probs);
  EXPECT_EQ(o.status[2], lmsample::kRowBadDraft);
  for (int r = 6; r < 9; ++r) EXPECT_EQ(o.tokens[r], -1);
  EXPECT_EQ(o.status[0], lmsample::kRowOk);
  // offsets that do not add up: every request is bad_draft, every token -1
  o = run_chain({0, 3, 5, 9}, drafts, DraftKind::kDeterministic, {});  // (5 to 9: K = 3)
  EXPECT_EQ(o.status[0], lmsample::kRowOk);
  // more drafts than max_drafts (2) states: that request alone is bad_draft
  const Outs capped = run_chain({0, 3, 5, 9}, drafts, DraftKind::kDeterministic, {}, 2);
  EXPECT_EQ(capped.status[2], lmsample::kRowBadDraft);
  EXPECT_EQ(capped.accepted[2], 0);
  for (int r = 5; r < 9; ++r) EXPECT_EQ(capped.tokens[r], -1) << "row " << r;
  for (const int b : {0, 1}) {
    EXPECT_EQ(capped.status[b], o.status[b]) << "request " << b;
    EXPECT_EQ(capped.accepted[b], o.accepted[b]) << "request " << b;
  }
  for (int r = 0; r < 5; ++r) EXPECT_EQ(capped.tokens[r], o.tokens[r]) << "row " << r;
  o = run_chain({0, 3, 2, 9}, drafts, DraftKind::kDeterministic, {});
  for (int b = 0; b < 3; ++b) EXPECT_EQ(o.status[b], lmsample::kRowBadDraft) << "request " << b;
  for (int r = 0; r < 9; ++r) EXPECT_EQ(o.tokens[r], -1);
  // a tree whose node 2 has parent 2 (not before it), in request 0 of 3
  {
    const std::vector<int64_t> off{0, 3, 6, 9};
    const std::vector<int32_t> par{-1, 0, 2, -1, 0, 0, -1, 0, 1};
    const std::vector<int32_t> tk{0, 5, 6, 0, 5, 6, 0, 5, 6};
    const DevBuf d_off = upload(off), d_par = upload(par), d_tk = upload(tk);
    TreeRequest t;
    take_rows(t, db.request(), 3);
    t.node_offsets = d_off.as<int64_t>();
    t.parents = d_par.as<int32_t>();
    t.tokens = d_tk.as<int32_t>();
    DevBuf acc(12), path(36), tok(36), st(12);
    const size_t wsb = lmsample::verify_tree_workspace_size(t, gc);
    const lmsample::Status s = lmsample::verify_tree(
        t, TreeOutputs{acc.as<int32_t>(), path.as<int32_t>(), tok.as<int32_t>(), st.as<int32_t>()},
        ws_.get(wsb), wsb, gc);
    ASSERT_TRUE(s.ok()) << s.message;
    wait_stream(stream_, call_timeout_s(), "tree checks");
    const std::vector<int32_t> status = download<int32_t>(st, 3);
    const std::vector<int32_t> tokens = download<int32_t>(tok, 9);
    EXPECT_EQ(status[0], lmsample::kRowBadDraft);
    EXPECT_EQ(status[1], lmsample::kRowOk);
    EXPECT_EQ(status[2], lmsample::kRowOk);
    for (int r = 0; r < 3; ++r) EXPECT_EQ(tokens[r], -1);
    EXPECT_GE(tokens[3], 0);
  }
  summary(Compared{}, "device-side checks");
}

}  // namespace
}  // namespace lmsgpu

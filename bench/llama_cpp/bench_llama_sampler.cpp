// lmsample's CPU backend beside llama.cpp's sampler chain and the std::sort reference, on the
// same logits, one core (issue 11's CPU comparison). Built and run by
// scripts/llama_cpp_baseline.sh, which fetches llama.cpp (the copy in PyPI's llama-cpp-python
// sdist) and builds only its `llama` library: no llama.cpp code is in this repository.
//
// Each op is timed as a user of each library runs it: llama.cpp fills a llama_token_data array
// from the row's logits (what llama_sampler_sample does) and applies a chain (greedy; temp +
// dist; top_k / top_p / min_p + temp + dist); lmsample samples the whole batch with
// cpu_threads = 1; the reference is check::reference_sample_batch (a full std::sort per row).
// Median over repetitions of the time per row. llama.cpp's draws are its own (std::mt19937 and
// a float cumulative sum), so only the speeds compare, not the tokens.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "check/reference.hpp"
#include "llama.h"
#include "lmsample/lmsample.hpp"

namespace {

struct Op {
  const char* name;
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
};

const Op kOps[] = {
    {"greedy (T=0)", 0.0f, 0, 1.0f, 0.0f}, {"temperature only (T=1)", 1.0f, 0, 1.0f, 0.0f},
    {"top-k 50", 1.0f, 50, 1.0f, 0.0f},    {"top-p 0.9", 1.0f, 0, 0.9f, 0.0f},
    {"min-p 0.05", 1.0f, 0, 1.0f, 0.05f},  {"top-k 50 + top-p 0.9", 1.0f, 50, 0.9f, 0.0f},
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double time_us(int reps, F f) {
  std::vector<double> t;
  for (int r = 0; r < reps + 2; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    if (r >= 2) t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return median(t);
}

llama_sampler* chain_of(const Op& op, uint32_t seed) {
  llama_sampler* c = llama_sampler_chain_init(llama_sampler_chain_default_params());
  if (op.temperature == 0.0f) {
    llama_sampler_chain_add(c, llama_sampler_init_greedy());
    return c;
  }
  if (op.top_k > 0) llama_sampler_chain_add(c, llama_sampler_init_top_k(op.top_k));
  if (op.top_p < 1.0f) llama_sampler_chain_add(c, llama_sampler_init_top_p(op.top_p, 1));
  if (op.min_p > 0.0f) llama_sampler_chain_add(c, llama_sampler_init_min_p(op.min_p, 1));
  llama_sampler_chain_add(c, llama_sampler_init_temp(op.temperature));
  llama_sampler_chain_add(c, llama_sampler_init_dist(seed));
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t v = argc > 1 ? std::atoll(argv[1]) : 151936;
  const int64_t b = 8;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 15;
  std::mt19937_64 gen(20261201);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> logits(static_cast<size_t>(b * v));
  for (float& x : logits) x = 4.0f * nd(gen);  // N(0,1)*4, as bench_cpu's "gauss" rows

  std::printf(
      "| op | V | lmsample µs/row | llama.cpp µs/row | std::sort ref µs/row | lmsample vs "
      "llama.cpp |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (const Op& op : kOps) {
    std::vector<float> t(b, op.temperature), p(b, op.top_p), mp(b, op.min_p);
    std::vector<int32_t> k(b, op.top_k);
    std::vector<uint64_t> seed(b), step(b, 3);
    for (int64_t r = 0; r < b; ++r) seed[static_cast<size_t>(r)] = 1000 + static_cast<uint64_t>(r);
    lmsample::Request req;
    req.logits = {logits.data(), lmsample::DType::kFloat32, b, v};
    req.params.temperature = t.data();
    if (op.top_k) req.params.top_k = k.data();
    if (op.top_p < 1.0f) req.params.top_p = p.data();
    if (op.min_p > 0.0f) req.params.min_p = mp.data();
    req.params.seed = seed.data();
    req.params.step = step.data();
    std::vector<int32_t> tok(b), st(b);
    lmsample::Outputs out;
    out.tokens = tok.data();
    out.status = st.data();
    lmsample::ExecConfig cfg;
    cfg.cpu_threads = 1;
    std::vector<unsigned char> ws(lmsample::workspace_size(req, cfg) + 1);
    const double lms = time_us(reps,
                               [&] {
                                 const lmsample::Status s =
                                     lmsample::sample(req, out, ws.data(), ws.size(), cfg);
                                 if (!s.ok())
                                   std::fprintf(stderr, "lmsample: %s\n", s.message.c_str());
                               }) /
                       static_cast<double>(b);

    std::vector<llama_token_data> cur(static_cast<size_t>(v));
    std::vector<llama_sampler*> chains;
    for (int64_t r = 0; r < b; ++r) chains.push_back(chain_of(op, static_cast<uint32_t>(r)));
    int32_t sink = 0;
    const double lcpp =
        time_us(reps,
                [&] {
                  for (int64_t r = 0; r < b; ++r) {
                    const float* row = logits.data() + r * v;
                    for (int64_t i = 0; i < v; ++i)
                      cur[static_cast<size_t>(i)] = {static_cast<llama_token>(i), row[i], 0.0f};
                    llama_token_data_array arr{cur.data(), cur.size(), -1, false};
                    llama_sampler_apply(chains[static_cast<size_t>(r)], &arr);
                    sink += arr.selected >= 0 ? arr.data[arr.selected].id : -1;
                  }
                }) /
        static_cast<double>(b);
    for (llama_sampler* c : chains) llama_sampler_free(c);

    const double ref =
        time_us(std::max(3, reps / 5), [&] { lmsample::check::reference_sample_batch(req, out); }) /
        static_cast<double>(b);
    std::printf("| %s | %lld | %.1f | %.1f | %.1f | %.2fx |\n", op.name, static_cast<long long>(v),
                lms, lcpp, ref, lcpp / lms);
    if (sink == 42424242) std::printf(" ");
  }
  return 0;
}

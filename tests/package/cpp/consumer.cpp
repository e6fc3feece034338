// A C++ program built against an installed lmsample (its CMake package), once with the shared and
// once with the static library: samples a small batch on the CPU with every public C++ function.
#include <cstdio>
#include <cstring>
#include <lmsample/lmsample.hpp>
#include <vector>

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"x.y.z\""
#endif

int main() {
  const int64_t batch = 3, vocab = 6;
  const std::vector<float> logits = {0, 1, 2, 5, 4, 3,    // greedy: 3
                                     9, 1, 2, 3, 4, 8,    // greedy: 0
                                     1, 2, 3, 4, 5, 30};  // top-k 2, seeded: 5 (4: p = e^-25)
  const std::vector<float> temperature = {0.f, 0.f, 1.f};
  const std::vector<int32_t> top_k = {0, 0, 2};
  const std::vector<uint64_t> seed = {1, 2, 3};
  std::vector<int32_t> tokens(batch, -7), status(batch, -7);

  if (std::strcmp(lmsample::version(), EXPECTED_VERSION) != 0) {
    std::fprintf(stderr, "version() = %s, expected %s\n", lmsample::version(), EXPECTED_VERSION);
    return 1;
  }
  if (!lmsample::backend_available(lmsample::Backend::kCpu)) return 2;
  if (lmsample::resolve_backend(lmsample::Backend::kCpu) != lmsample::Backend::kCpu) return 3;
  if (std::strcmp(lmsample::row_status_name(lmsample::kRowOk), "ok") != 0) return 4;

  lmsample::Request req;
  req.logits = {logits.data(), lmsample::DType::kFloat32, batch, vocab};
  req.params.temperature = temperature.data();
  req.params.top_k = top_k.data();
  req.params.seed = seed.data();
  lmsample::Outputs out;
  out.tokens = tokens.data();
  out.status = status.data();
  lmsample::ExecConfig cfg;
  cfg.backend = lmsample::Backend::kCpu;
  cfg.cpu_threads = 2;
  std::vector<unsigned char> workspace(lmsample::workspace_size(req, cfg) + 1);
  const lmsample::Status s = lmsample::sample(req, out, workspace.data(), workspace.size(), cfg);
  if (!s.ok()) {
    std::fprintf(stderr, "sample: %s\n", s.message.c_str());
    return 5;
  }
  const int32_t expected[3] = {3, 0, 5};
  for (int64_t r = 0; r < batch; ++r) {
    if (status[r] != lmsample::kRowOk || tokens[r] != expected[r]) {
      std::fprintf(stderr, "row %lld: token %d status %s, expected token %d\n",
                   static_cast<long long>(r), tokens[r], lmsample::row_status_name(status[r]),
                   expected[r]);
      return 6;
    }
  }
  std::printf("c++ consumer ok: lmsample %s, tokens %d %d %d\n", lmsample::version(), tokens[0],
              tokens[1], tokens[2]);
  return 0;
}

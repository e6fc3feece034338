// Runs lmsample::sample on host data with any backend: for CUDA it copies the request to the
// device, runs, waits and copies the outputs back, so the rest of the tool only handles host
// arrays. The tool gets CUDA support when the project is configured with the CUDA language
// (LMSAMPLE_CLI_CUDA); otherwise --backend cuda reports that it is not available.
#pragma once

#include <memory>
#include <string>

#include "lmsample/lmsample.hpp"

namespace lmsample::tool {

//! "auto" | "cpu" | "cuda" -> Backend; false for other text.
bool parse_backend(const std::string& text, Backend* out);
const char* backend_name(Backend b);

//! Number of CPU threads a call with cpu_threads = 0 may use here.
int hardware_threads();

class Executor {
 public:
  //! Resolves `requested` (kAuto -> CUDA when usable, else CPU) and checks it is usable here;
  //! on failure *status says why (kUnsupported) and *out is left empty.
  static std::unique_ptr<Executor> create(Backend requested, int cpu_threads, Status* status);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  Backend backend() const { return cfg_.backend; }
  const ExecConfig& config() const { return cfg_; }
  void set_threads(int n) { cfg_.cpu_threads = n; }
  void set_gpu_keys(GpuKeys k) { cfg_.gpu_keys = k; }
  //! e.g. "cpu (2 threads)" or "cuda (NVIDIA H100 80GB HBM3)".
  std::string describe() const;

  //! Makes `req` and `out` (host pointers, kept by the caller until fetch()) ready to run:
  //! sizes the workspace and, for CUDA, copies every input array to the device.
  Status prepare(const Request& req, const Outputs& out);
  //! Runs sample() on the prepared request and, for CUDA, waits for it. Returns sample()'s Status.
  Status launch();
  //! Copies the outputs to the host arrays given to prepare() (CUDA; nothing to do on the CPU).
  Status fetch();
  //! prepare + launch + fetch. The outputs are fetched also when launch() returns
  //! kInvalidRowParameter (all rows are written then); the launch status is returned.
  Status run(const Request& req, const Outputs& out);

 private:
  Executor() = default;
  struct Device;
  ExecConfig cfg_;
  Request host_req_;
  Outputs host_out_;
  Request req_;  // what sample() sees (device pointers for CUDA)
  Outputs out_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  size_t workspace_capacity_ = 0;
  std::unique_ptr<Device> dev_;
};

}  // namespace lmsample::tool

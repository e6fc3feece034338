// The GPU backend (CUDA, and HIP through the same sources): host-side entry points.
#pragma once

#include "lmsample/lmsample.hpp"

namespace lmsample::gpu {

//! Whether a usable GPU is present.
bool device_present();

//! Workspace bytes for `req` on the current device.
size_t workspace_size(const Request& req, const ExecConfig& cfg);

//! Samples every row on cfg.stream; asynchronous; no allocation, no host synchronisation.
//! Every pointer in req/out and the workspace must be device memory.
Status sample(const Request& req, const Outputs& out, void* workspace, size_t workspace_bytes,
              const ExecConfig& cfg);

}  // namespace lmsample::gpu

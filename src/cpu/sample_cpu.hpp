// The CPU backend: the contract's reference behaviour and a fast production fallback.
// Rows are independent and spread over OpenMP threads; each thread works in its own slice of the
// caller's workspace, so nothing is allocated while sampling.
#pragma once

#include "lmsample/lmsample.hpp"

namespace lmsample::cpu {

//! Threads a call will use (cfg.cpu_threads, 0 = all hardware threads, never more than rows).
int threads_for(const Request& req, const ExecConfig& cfg);

//! Workspace bytes for `req` with `cfg`.
size_t workspace_size(const Request& req, const ExecConfig& cfg);

//! Name of the instruction-set build sample() runs here ("avx2+fma" or "baseline").
const char* isa_name();

//! Samples every row. The request has passed api::validate_request.
Status sample(const Request& req, const Outputs& out, void* workspace, size_t workspace_bytes,
              const ExecConfig& cfg);

}  // namespace lmsample::cpu

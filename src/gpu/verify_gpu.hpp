// The GPU backend's speculative decoding verification (CUDA, and HIP through the same sources):
// host-side entry points (verify_gpu.cu). Every pointer in the request, the outputs and the
// workspace must be device memory; asynchronous on cfg.stream, no allocation, no host
// synchronisation. What the host cannot check (offsets, draft ids, probabilities, parents) is
// checked on the device and reported through each request's status (kRowBadDraft,
// kRowBadTokenId).
#pragma once

#include "lmsample/lmsample.hpp"

namespace lmsample::gpu {

size_t verify_chain_workspace_size(const ChainRequest& req, const ExecConfig& cfg);
Status verify_chain(const ChainRequest& req, const ChainOutputs& out, void* workspace,
                    size_t workspace_bytes, const ExecConfig& cfg);

size_t verify_tree_workspace_size(const TreeRequest& req, const ExecConfig& cfg);
Status verify_tree(const TreeRequest& req, const TreeOutputs& out, void* workspace,
                   size_t workspace_bytes, const ExecConfig& cfg);

}  // namespace lmsample::gpu

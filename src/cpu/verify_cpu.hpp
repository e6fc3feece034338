// The CPU backend of chain verification (speculative decoding, docs/contract.md section 8).
#pragma once

#include "lmsample/lmsample.hpp"

namespace lmsample::cpu {

//! Workspace bytes verify_chain needs with `cfg` (reads the request's host offsets).
size_t verify_chain_workspace_size(const ChainRequest& req, const ExecConfig& cfg);

//! Verifies every request. The request has passed api::validate_chain.
Status verify_chain(const ChainRequest& req, const ChainOutputs& out, void* workspace,
                    size_t workspace_bytes, const ExecConfig& cfg);

//! The same for tree verification.
size_t verify_tree_workspace_size(const TreeRequest& req, const ExecConfig& cfg);
Status verify_tree(const TreeRequest& req, const TreeOutputs& out, void* workspace,
                   size_t workspace_bytes, const ExecConfig& cfg);

}  // namespace lmsample::cpu

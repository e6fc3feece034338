// Structural checks of a request, shared by every backend (they read no device memory).
#pragma once

#include "lmsample/lmsample.hpp"

namespace lmsample::api {

//! Effective row stride (elements) and bitmask row length (words) of a request.
inline int64_t row_stride_of(const Request& req) {
  return req.logits.row_stride == 0 ? req.logits.vocab : req.logits.row_stride;
}
inline int64_t mask_words_of(const Request& req) {
  return req.mask_row_words == 0 ? (req.logits.vocab + 31) / 32 : req.mask_row_words;
}

//! ExecConfig::cpu_threads in [0, kMaxCpuThreads].
Status check_threads(const ExecConfig& cfg);

//! Checks shapes, enums and required pointers. `host_readable` says whether the CSR offsets may
//! be read here (CPU backend) to check that they do not decrease.
Status validate_request(const Request& req, const Outputs& out, bool host_readable);

//! Checks a chain verification request (host pointers): shapes, offsets, every draft id and
//! draft probability; the message names the request.
//! With host_readable false (a GPU backend) only what the host can check without reading the
//! device's arrays: the stated shapes, kinds and pointers.
Status validate_chain(const ChainRequest& req, const ChainOutputs& out, bool host_readable);
//! The same for tree verification: offsets, every parent (before its child) and token.
Status validate_tree(const TreeRequest& req, const TreeOutputs& out, bool host_readable);

//! The message for a row whose status is a kRowBad* value, e.g. "row 3: top_p = nan (must be > 0)".
std::string describe_bad_row(const Request& req, int64_t row, int32_t status);

}  // namespace lmsample::api

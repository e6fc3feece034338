// An independent, deliberately simple implementation of the contract (docs/contract.md): it
// processes one row at a time with a full std::sort, in the most literal way. It shares only the
// contract's scalar arithmetic (src/core) with the backends. Used by the tests, by
// `lmsample verify` and as the sort-based baseline of the CPU benchmarks.
#pragma once

#include <cstdint>
#include <vector>

#include "core/params.hpp"
#include "lmsample/lmsample.hpp"

namespace lmsample::check {

//! The exact distribution the contract draws row `row` from.
struct RefDistribution {
  int32_t status = kRowOk;        //!< kRowOk, kRowEmpty or a kRowBad* status
  bool greedy = false;            //!< T = 0: `ids` holds the single greedy token
  std::vector<int32_t> ids;       //!< the kept set, in increasing token id
  std::vector<uint64_t> weights;  //!< fixed-point weight of each kept token (same order)
  uint64_t total = 0;             //!< sum of weights
};

//! One row's full result, as the contract defines it.
struct RefResult {
  int32_t token = -1;
  int32_t status = kRowOk;
  int32_t kept = 0;
  float logprob = 0.0f;
  std::vector<int32_t> top_ids;  //!< req.top_logprobs entries
  std::vector<float> top_logprobs;
};

//! Steps 1-5 of the contract for row `row`: writes the processed logits (V entries) to `y` and
//! returns kRowOk or the row's kRowBad* status (then `y` is all -inf). The row's settings (with
//! defaults filled in) go to `settings` when it is not null. Does not report kRowEmpty.
int32_t reference_processed_logits(const Request& req, int64_t row, std::vector<float>& y,
                                   core::RowSettings* settings = nullptr);

//! Kept set and weights of row `row` of `req` (host pointers).
RefDistribution reference_distribution(const Request& req, int64_t row);

//! The contract's full result for row `row` of `req` (host pointers).
RefResult reference_sample(const Request& req, int64_t row);

//! Runs reference_sample over every row and writes `out` like lmsample::sample does.
void reference_sample_batch(const Request& req, const Outputs& out);

}  // namespace lmsample::check

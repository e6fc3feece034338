// `lmsample verify`: the statistical and contract self-check a user runs on their own machine.
//
//  exact/*      the backend's outputs equal the reference implementation's (src/check) bit for
//               bit (tokens, statuses, kept sizes, top ids; logprobs within 1e-6) on random rows
//               and on edge cases (NaN, +-inf, ties, huge and tiny values, bad parameters, ...);
//  chi2/*       Pearson's chi-square test of N draws of one row (steps 0..N-1, or seeds, or
//               substreams, all fixed, so the test is deterministic) against the exact
//               distribution from check::reference_distribution; passes when p > 1e-4 and no draw
//               falls outside the kept set;
//  invariance/* the same bits for any thread count, batch size and row position, and on
//               repeated calls (and CUDA == CPU when the backend is CUDA);
//  contract/*   structural errors are reported and write nothing; bad row parameters give the
//               right statuses and message.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "lmsample/lmsample.hpp"

namespace lmsample::tool {

struct VerifyOptions {
  Backend backend = Backend::kAuto;
  int threads = 0;              //!< cpu_threads of the baseline runs (0 = all)
  bool quick = false;           //!< fewer rows and draws (a few seconds)
  std::string filter;           //!< run only the checks whose name contains this text
  std::ostream* log = nullptr;  //!< one PASS/FAIL line per check as it finishes
};

struct CheckResult {
  std::string name;
  bool passed = false;
  std::string detail;  //!< what was checked, or the first mismatch
  double seconds = 0.0;
};

struct VerifyReport {
  std::string backend;  //!< the executor's description, e.g. "cpu (16 threads)"
  std::string error;    //!< set when the checks could not run at all (e.g. backend unavailable)
  std::vector<CheckResult> checks;
  bool passed() const;  //!< no error and every check passed (and at least one ran)
};

//! Runs the checks. Never throws (an exception inside a check fails that check).
VerifyReport run_verify(const VerifyOptions& options);

//! The check names, in the order they run.
std::vector<std::string> verify_check_names(bool quick);

}  // namespace lmsample::tool

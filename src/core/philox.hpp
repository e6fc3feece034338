// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator, so a row's random number depends only on (seed, step, substream).
#pragma once

#include "core/port.hpp"

namespace lmsample::core {

struct Philox4 {
  uint32_t v[4];
};

LMS_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

//! Philox4x32 with 10 rounds, the Random123 / cuRAND constants.
LMS_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kM0, ctr.v[0], &hi0, &lo0);
    mulhilo32(kM1, ctr.v[2], &hi1, &lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
  }
  return ctr;
}

//! The row's uniform 64-bit draw: key = seed, counter = (step lo, step hi, substream, 0),
//! u = out[1] * 2^32 + out[0].
LMS_HD uint64_t row_uniform64(uint64_t seed, uint64_t step, uint32_t substream) {
  const Philox4 ctr{
      {static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), substream, 0u}};
  const Philox4 out =
      philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return (static_cast<uint64_t>(out.v[1]) << 32) | out.v[0];
}

}  // namespace lmsample::core

// Row parameters: defaults, validation and the derived per-row settings, shared by every backend.
#pragma once

#include "core/math.hpp"
#include "lmsample/lmsample.hpp"

namespace lmsample::core {

//! One row's parameters after defaults are filled in.
struct RowSettings {
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition = 1.0f;
  float frequency = 0.0f;
  float presence = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;
  uint32_t substream = 0;
};

//! The settings of a row whose arrays are all null: RowParams::defaults.
LMS_HD RowSettings default_row_settings(const RowParams& p) {
  const RowDefaults& d = p.defaults;
  RowSettings s;
  s.temperature = d.temperature;
  s.top_k = d.top_k;
  s.top_p = d.top_p;
  s.min_p = d.min_p;
  s.repetition = d.repetition_penalty;
  s.frequency = d.frequency_penalty;
  s.presence = d.presence_penalty;
  s.seed = d.seed;
  s.step = d.step;
  s.substream = d.substream;
  return s;
}

//! The inverse: RowDefaults holding a row's settings (a one-row request that carries them).
LMS_HD RowDefaults row_defaults_of(const RowSettings& s) {
  RowDefaults d;
  d.temperature = s.temperature;
  d.top_k = s.top_k;
  d.top_p = s.top_p;
  d.min_p = s.min_p;
  d.repetition_penalty = s.repetition;
  d.frequency_penalty = s.frequency;
  d.presence_penalty = s.presence;
  d.seed = s.seed;
  d.step = s.step;
  d.substream = s.substream;
  return d;
}

//! Reads row r's parameters (null arrays take RowParams::defaults). Pointers must be readable
//! here.
LMS_HD RowSettings load_row_settings(const RowParams& p, int64_t r) {
  RowSettings s = default_row_settings(p);
  if (p.temperature) s.temperature = p.temperature[r];
  if (p.top_k) s.top_k = p.top_k[r];
  if (p.top_p) s.top_p = p.top_p[r];
  if (p.min_p) s.min_p = p.min_p[r];
  if (p.repetition_penalty) s.repetition = p.repetition_penalty[r];
  if (p.frequency_penalty) s.frequency = p.frequency_penalty[r];
  if (p.presence_penalty) s.presence = p.presence_penalty[r];
  if (p.seed) s.seed = p.seed[r];
  if (p.step) s.step = p.step[r];
  if (p.substream) s.substream = p.substream[r];
  return s;
}

//! kRowOk when the settings are valid, else the status naming the first bad parameter
//! (checked in the order of the RowStatus values).
LMS_HD int32_t validate_row_settings(const RowSettings& s) {
  if (!(s.temperature >= 0.0f) || !is_finite(s.temperature)) return kRowBadTemperature;
  if (s.top_k < 0) return kRowBadTopK;
  if (!(s.top_p > 0.0f)) return kRowBadTopP;  // NaN fails too; p >= 1 means off
  if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) return kRowBadMinP;
  if (!(s.repetition > 0.0f) || !is_finite(s.repetition)) return kRowBadRepetitionPenalty;
  if (!(s.frequency >= -2.0f && s.frequency <= 2.0f)) return kRowBadFrequencyPenalty;
  if (!(s.presence >= -2.0f && s.presence <= 2.0f)) return kRowBadPresencePenalty;
  return kRowOk;
}

//! Repetition, frequency and presence penalties on one processed logit (vLLM's formulas):
//! repetition first (y / r if y > 0, else y * r) when the token is in the prompt or the output,
//! then y - frequency * count, then y - presence if count > 0 (count: occurrences in the output).
LMS_HD float apply_penalties(float y, bool seen, uint32_t count, const RowSettings& s) {
  if (seen && s.repetition != 1.0f)
    y = y > 0.0f ? div_rn(y, s.repetition) : mul_rn(y, s.repetition);
  if (count > 0) {
    if (s.frequency != 0.0f) y = sub_rn(y, mul_rn(s.frequency, static_cast<float>(count)));
    if (s.presence != 0.0f) y = sub_rn(y, s.presence);
  }
  return y;
}

}  // namespace lmsample::core

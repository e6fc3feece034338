// The reference implementation of docs/contract.md: one row at a time, every step written out in
// the order the contract states it, with full std::sorts. It shares only the scalar arithmetic of
// src/core with the backends (never their control flow), so that a bug in a backend's selection,
// scan or draw logic shows up as a mismatch against this file.
#include "check/reference.hpp"

#include <algorithm>
#include <limits>

#include "core/math.hpp"
#include "core/params.hpp"
#include "core/philox.hpp"

namespace lmsample::check {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

int64_t stride_of(const Request& req) {
  return req.logits.row_stride == 0 ? req.logits.vocab : req.logits.row_stride;
}

int64_t mask_words_of(const Request& req) {
  return req.mask_row_words == 0 ? (req.logits.vocab + 31) / 32 : req.mask_row_words;
}

// Step 1: the row's logits converted exactly to fp32.
void load_row(const Request& req, int64_t row, float* x) {
  const int64_t v = req.logits.vocab;
  const int64_t base = row * stride_of(req);
  switch (req.logits.dtype) {
    case DType::kFloat32: {
      const float* src = static_cast<const float*>(req.logits.data) + base;
      for (int64_t i = 0; i < v; ++i) x[i] = src[i];
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(req.logits.data) + base;
      for (int64_t i = 0; i < v; ++i) x[i] = core::bf16_to_float(src[i]);
      break;
    }
    case DType::kFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(req.logits.data) + base;
      for (int64_t i = 0; i < v; ++i) x[i] = core::f16_to_float(src[i]);
      break;
    }
  }
}

// Whether every token id of the row's CSR entries is in [0, V).
bool ids_in_range(const SparseRows& rows, int64_t row, int64_t vocab) {
  if (rows.offsets == nullptr) return true;
  for (int64_t j = rows.offsets[row]; j < rows.offsets[row + 1]; ++j) {
    if (rows.tokens[j] < 0 || rows.tokens[j] >= vocab) return false;
  }
  return true;
}

// Sort key "y descending, then id ascending" packed in one integer (y is canonical: no NaN, no -0).
uint64_t desc_key(float y, int32_t id) {
  return (static_cast<uint64_t>(~core::order_key(y)) << 32) | static_cast<uint32_t>(id);
}

}  // namespace

int32_t reference_processed_logits(const Request& req, int64_t row, std::vector<float>& y,
                                   core::RowSettings* settings_out) {
  const int64_t v = req.logits.vocab;
  const core::RowSettings s = core::load_row_settings(req.params, row);
  if (settings_out) *settings_out = s;
  y.assign(static_cast<size_t>(v), kNegInf);

  // Section 6: the first bad parameter in the order of the table, then the token ids.
  const int32_t param_status = core::validate_row_settings(s);
  if (param_status != kRowOk) return param_status;
  if (!ids_in_range(req.logit_bias, row, v) || !ids_in_range(req.prompt_tokens, row, v) ||
      !ids_in_range(req.output_tokens, row, v)) {
    return kRowBadTokenId;
  }

  // 1. Load.
  load_row(req, row, y.data());

  // 2. Allowed-token bitmask: a disallowed token gets -inf.
  std::vector<char> allowed(static_cast<size_t>(v), 1);
  if (req.allowed_mask != nullptr) {
    const uint32_t* words = req.allowed_mask + row * mask_words_of(req);
    for (int64_t t = 0; t < v; ++t) {
      if (((words[t / 32] >> (t % 32)) & 1u) == 0) {
        allowed[t] = 0;
        y[t] = kNegInf;
      }
    }
  }

  // 3. Logit bias, entry by entry in the order given; no effect on a disallowed token.
  if (req.logit_bias.offsets != nullptr) {
    for (int64_t j = req.logit_bias.offsets[row]; j < req.logit_bias.offsets[row + 1]; ++j) {
      const int32_t t = req.logit_bias.tokens[j];
      if (allowed[t]) y[t] = core::add_rn(y[t], req.logit_bias.values[j]);
    }
  }

  // 4. Penalties: seen = in the prompt or the output; count = occurrences in the output.
  if (req.prompt_tokens.offsets != nullptr || req.output_tokens.offsets != nullptr) {
    std::vector<char> seen(static_cast<size_t>(v), 0);
    std::vector<uint32_t> count(static_cast<size_t>(v), 0);
    if (req.prompt_tokens.offsets != nullptr) {
      for (int64_t j = req.prompt_tokens.offsets[row]; j < req.prompt_tokens.offsets[row + 1];
           ++j) {
        seen[req.prompt_tokens.tokens[j]] = 1;
      }
    }
    if (req.output_tokens.offsets != nullptr) {
      for (int64_t j = req.output_tokens.offsets[row]; j < req.output_tokens.offsets[row + 1];
           ++j) {
        seen[req.output_tokens.tokens[j]] = 1;
        ++count[req.output_tokens.tokens[j]];
      }
    }
    for (int64_t t = 0; t < v; ++t) {
      if (allowed[t] && seen[t]) y[t] = core::apply_penalties(y[t], true, count[t], s);
    }
  }

  // 5. Canonicalise.
  for (int64_t t = 0; t < v; ++t) y[t] = core::canonical(y[t]);
  return kRowOk;
}

namespace {

// Everything the contract derives from one row.
struct RowState {
  int32_t status = kRowOk;
  core::RowSettings s;
  std::vector<float> y;  // processed logits
  float m = kNegInf;     // maximum processed logit
  int64_t n_valid = 0;
  int64_t n_inf = 0;  // tokens with y = +inf
};

void analyse(const Request& req, int64_t row, RowState& st) {
  st.status = reference_processed_logits(req, row, st.y, &st.s);
  if (st.status != kRowOk) return;
  for (const float yi : st.y) {
    if (yi > kNegInf) {
      ++st.n_valid;
      if (yi > st.m) st.m = yi;
      if (yi == kPosInf) ++st.n_inf;
    }
  }
  if (st.n_valid == 0) st.status = kRowEmpty;
}

// Valid token ids sorted by y descending, ties by id ascending.
std::vector<int32_t> sorted_valid(const std::vector<float>& y) {
  std::vector<uint64_t> keys;
  keys.reserve(y.size());
  for (size_t t = 0; t < y.size(); ++t) {
    if (y[t] > kNegInf) keys.push_back(desc_key(y[t], static_cast<int32_t>(t)));
  }
  std::sort(keys.begin(), keys.end());
  std::vector<int32_t> ids(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) ids[i] = static_cast<int32_t>(keys[i] & 0xffffffffu);
  return ids;
}

RefDistribution distribution_of(const RowState& st) {
  RefDistribution d;
  d.status = st.status;
  if (st.status != kRowOk) return d;
  const auto v = static_cast<int32_t>(st.y.size());
  const bool greedy = st.s.temperature == 0.0f;
  d.greedy = greedy;

  // Section 3, +inf: the kept set is exactly the +inf tokens, weight 1 each; greedy takes the
  // lowest id.
  if (st.n_inf > 0) {
    for (int32_t t = 0; t < v; ++t) {
      if (st.y[t] == kPosInf) {
        d.ids.push_back(t);
        d.weights.push_back(1);
        d.total += 1;
        if (greedy) break;
      }
    }
    return d;
  }

  // Section 3, greedy: the lowest id with y = m.
  if (greedy) {
    for (int32_t t = 0; t < v; ++t) {
      if (st.y[t] == st.m) {
        d.ids.push_back(t);
        d.weights.push_back(core::mass_of(1.0f));
        d.total = d.weights.back();
        break;
      }
    }
    return d;
  }

  // 6. Temperature: relative likelihoods of the valid tokens.
  const float inv_t = core::div_rn(1.0f, st.s.temperature);
  std::vector<float> e(static_cast<size_t>(v), 0.0f);
  std::vector<char> kept(static_cast<size_t>(v), 0);
  for (int32_t t = 0; t < v; ++t) {
    if (st.y[t] > kNegInf) {
      e[t] = core::rel_likelihood(st.y[t], st.m, inv_t);
      kept[t] = 1;
    }
  }

  // 7. min-p.
  if (st.s.min_p > 0.0f) {
    for (int32_t t = 0; t < v; ++t) {
      if (kept[t] && !(e[t] >= st.s.min_p)) kept[t] = 0;
    }
  }

  // 8. top-k: v_k is the k-th largest processed logit of the valid tokens, with multiplicity.
  if (st.s.top_k > 0 && static_cast<int64_t>(st.s.top_k) < st.n_valid) {
    std::vector<float> ys;
    ys.reserve(static_cast<size_t>(st.n_valid));
    for (int32_t t = 0; t < v; ++t) {
      if (st.y[t] > kNegInf) ys.push_back(st.y[t]);
    }
    std::sort(ys.begin(), ys.end(), [](float a, float b) { return a > b; });
    const float v_k = ys[static_cast<size_t>(st.s.top_k) - 1];
    for (int32_t t = 0; t < v; ++t) {
      if (kept[t] && !(st.y[t] >= v_k)) kept[t] = 0;
    }
  }

  // 9. top-p: the smallest set of highest tokens whose weight reaches ceil(p * W), closed under
  // ties.
  if (st.s.top_p < 1.0f) {
    uint64_t w_total = 0;
    std::vector<uint64_t> keys;
    for (int32_t t = 0; t < v; ++t) {
      if (kept[t]) {
        w_total += core::mass_of(e[t]);
        keys.push_back(desc_key(st.y[t], t));
      }
    }
    std::sort(keys.begin(), keys.end());
    const uint64_t target = core::ceil_fraction(st.s.top_p, w_total);
    uint64_t sum = 0;
    float lowest_kept = kPosInf;
    for (const uint64_t k : keys) {
      const auto t = static_cast<int32_t>(k & 0xffffffffu);
      sum += core::mass_of(e[t]);
      lowest_kept = st.y[t];
      if (sum >= target) break;
    }
    for (int32_t t = 0; t < v; ++t) {
      if (kept[t] && !(st.y[t] >= lowest_kept)) kept[t] = 0;
    }
  }

  for (int32_t t = 0; t < v; ++t) {
    if (kept[t]) {
      d.ids.push_back(t);
      d.weights.push_back(core::mass_of(e[t]));
      d.total += d.weights.back();
    }
  }
  return d;
}

}  // namespace

RefDistribution reference_distribution(const Request& req, int64_t row) {
  RowState st;
  analyse(req, row, st);
  return distribution_of(st);
}

RefResult reference_sample(const Request& req, int64_t row) {
  RowState st;
  analyse(req, row, st);
  const auto n_top = static_cast<size_t>(std::max(req.top_logprobs, 0));

  RefResult r;
  r.status = st.status;
  r.top_ids.assign(n_top, -1);
  r.top_logprobs.assign(n_top, kNegInf);
  if (st.status != kRowOk) {
    r.token = -1;
    r.kept = 0;
    r.logprob = kNegInf;
    return r;
  }

  // 10. The draw (section 4): t = floor(u * W / 2^64); the smallest kept id whose running weight
  // in id order exceeds t.
  const RefDistribution d = distribution_of(st);
  if (d.greedy) {
    r.token = d.ids.front();
    r.kept = 1;
  } else {
    const uint64_t u = core::row_uniform64(st.s.seed, st.s.step, st.s.substream);
    const uint64_t target = core::scale_draw(u, d.total);
    uint64_t running = 0;
    for (size_t i = 0; i < d.ids.size(); ++i) {
      running += d.weights[i];
      if (running > target) {
        r.token = d.ids[i];
        break;
      }
    }
    r.kept = static_cast<int32_t>(d.ids.size());
  }

  // Section 5: log_softmax of the processed logits at T = 1, before temperature and truncation.
  // S = sum over the valid tokens of floor(exp(y - m) * 2^39). In the +inf case the +inf tokens
  // have -log(n_inf) and every other token -inf (the limit of the softmax).
  double log_norm = 0.0;
  if (st.n_inf == 0) {
    uint64_t s_fixed = 0;
    for (const float yi : st.y) {
      if (yi > kNegInf) s_fixed += core::mass_of(core::rel_likelihood(yi, st.m, 1.0f));
    }
    log_norm = core::log_normaliser(s_fixed);
  }
  auto logprob_at = [&](int32_t t) -> float {
    if (st.n_inf > 0) {
      return st.y[t] == kPosInf
                 ? static_cast<float>(-core::log_u64(static_cast<uint64_t>(st.n_inf)))
                 : kNegInf;
    }
    return st.y[t] > kNegInf ? core::logprob_of(st.y[t], st.m, log_norm) : kNegInf;
  };
  r.logprob = logprob_at(r.token);

  // top_logprobs: the n highest processed logits (ties: lower id first) among the valid tokens,
  // padded with -1 / -inf.
  if (n_top > 0) {
    const std::vector<int32_t> order = sorted_valid(st.y);
    for (size_t i = 0; i < n_top && i < order.size(); ++i) {
      r.top_ids[i] = order[i];
      r.top_logprobs[i] = logprob_at(order[i]);
    }
  }
  return r;
}

void reference_sample_batch(const Request& req, const Outputs& out) {
  const int64_t n_top = req.top_logprobs;
  for (int64_t row = 0; row < req.logits.batch; ++row) {
    const RefResult r = reference_sample(req, row);
    out.tokens[row] = r.token;
    out.status[row] = r.status;
    if (out.logprob) out.logprob[row] = r.logprob;
    if (out.kept) out.kept[row] = r.kept;
    for (int64_t i = 0; i < n_top; ++i) {
      if (out.top_ids) out.top_ids[row * n_top + i] = r.top_ids[static_cast<size_t>(i)];
      if (out.top_logprobs)
        out.top_logprobs[row * n_top + i] = r.top_logprobs[static_cast<size_t>(i)];
    }
  }
}

}  // namespace lmsample::check

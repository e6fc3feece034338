// CPU backend of speculative decoding's chain verification (docs/contract.md, section 8).
// Requests are spread over OpenMP threads; within a request the positions run in order, each
// target row (and draft row) reduced to the contract's kept set by cpu::row_distribution, then
// the decisions of core/verify.hpp. Each thread works in its own slice of the workspace.
#include "cpu/verify_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "api/validate.hpp"
#include "core/params.hpp"
#include "core/philox.hpp"
#include "core/verify.hpp"
#include "cpu/rows.hpp"
#include "cpu/sample_cpu.hpp"  // threads_for

namespace lmsample::cpu {
namespace {

using DistFn = DistributionFn;

// The functions of the instruction-set build in use.
struct RowFns {
  DistFn dist;
  LogprobFn logprob;
};

int64_t esize(DType dt) { return dt == DType::kFloat32 ? 4 : 2; }
int64_t stride_of(const Logits& l) { return l.row_stride == 0 ? l.vocab : l.row_stride; }

// Rows (positions, or tree nodes) of request b.
const int64_t* offsets_of(const ChainRequest& r) { return r.row_offsets; }
const int64_t* offsets_of(const TreeRequest& r) { return r.node_offsets; }
template <typename Req>
int64_t rows_of(const Req& r, int64_t b) {
  return offsets_of(r)[b + 1] - offsets_of(r)[b];
}

// The longest history a position can have: a request's output tokens plus its drafts (or its
// tree's deepest path, below its node count).
template <typename Req>
int64_t max_history(const Req& req) {
  int64_t m = 0;
  for (int64_t b = 0; b < req.requests; ++b) {
    const int64_t k = rows_of(req, b) - 1;
    const int64_t h = req.output_tokens.offsets
                          ? req.output_tokens.offsets[b + 1] - req.output_tokens.offsets[b]
                          : 0;
    m = std::max(m, h + k);
  }
  return m;
}

template <typename Req>
int threads_for_chain(const Req& req, const ExecConfig& cfg) {
  Request r;
  r.logits.batch = req.requests;
  return threads_for(r, cfg);
}

// Two scratches (target and draft rows), the history, and a tree's rejected siblings.
template <typename Req>
size_t per_thread_bytes(const Req& req) {
  return 2 * Scratch::bytes(req.target.vocab) +
         align_up(static_cast<size_t>(max_history(req) + 1) * sizeof(int32_t)) +
         align_up(static_cast<size_t>(kMaxTreeNodes) * sizeof(int32_t));
}

// One position's single-row request: request b's parameters (as the row's defaults), the bias
// and prompt of request b, the history plus the drafts before the position, and the bitmask of
// target row `mask_row`.
struct PositionRequest {
  Request req;
  int64_t bias_off[2], prompt_off[2], out_off[2];
};
template <typename Req>
void position_request(PositionRequest& p, const Req& cr, int64_t b, const void* row,
                      const Logits& shape, int64_t mask_row, const int32_t* history, int64_t n) {
  Request& q = p.req;
  q = Request{};
  q.logits = Logits{row, shape.dtype, 1, shape.vocab, stride_of(shape)};
  q.params.defaults = core::row_defaults_of(core::load_row_settings(cr.params, b));
  const int64_t words = cr.mask_row_words == 0 ? (shape.vocab + 31) / 32 : cr.mask_row_words;
  if (cr.allowed_mask) {
    q.allowed_mask = cr.allowed_mask + mask_row * words;
    q.mask_row_words = words;
  }
  if (cr.logit_bias.offsets) {
    p.bias_off[0] = cr.logit_bias.offsets[b];
    p.bias_off[1] = cr.logit_bias.offsets[b + 1];
    q.logit_bias = SparseRows{p.bias_off, cr.logit_bias.tokens, cr.logit_bias.values};
  }
  if (cr.prompt_tokens.offsets) {
    p.prompt_off[0] = cr.prompt_tokens.offsets[b];
    p.prompt_off[1] = cr.prompt_tokens.offsets[b + 1];
    q.prompt_tokens = SparseRows{p.prompt_off, cr.prompt_tokens.tokens, nullptr};
  }
  if (cr.output_tokens.offsets || n > 0) {
    p.out_off[0] = 0;
    p.out_off[1] = n;
    q.output_tokens = SparseRows{p.out_off, history, nullptr};
  }
}

// The kept set's weight of token x (ids increasing): 0 where x is not kept.
uint64_t weight_of(const Scratch& s, int64_t n, int32_t x) {
  const int32_t* it = std::lower_bound(s.ids, s.ids + n, x);
  return it != s.ids + n && *it == x ? s.w[it - s.ids] : 0;
}

// Request b's output history into `history`; its length.
template <typename Req>
int64_t load_history(const Req& req, int64_t b, int32_t* history) {
  int64_t h = 0;
  if (req.output_tokens.offsets) {
    for (int64_t i = req.output_tokens.offsets[b]; i < req.output_tokens.offsets[b + 1]; ++i)
      history[h++] = req.output_tokens.tokens[i];
  }
  return h;
}

// The kept set of target row `row` (request b's parameters, the history's first h tokens) into
// t.ids / t.w [0, *n), *total their weight; the row's status.
template <typename Req>
int32_t target_distribution(const Req& req, int64_t b, int64_t row, const Scratch& t,
                            const int32_t* history, int64_t h, DistFn dist, int64_t* n,
                            uint64_t* total) {
  const void* p = static_cast<const char*>(req.target.data) +
                  row * stride_of(req.target) * esize(req.target.dtype);
  PositionRequest pr;
  position_request(pr, req, b, p, req.target, row, history, h);
  return dist(t, pr.req, 0, stride_of(req.target), api::mask_words_of(pr.req), n, total);
}

using core::prob_weight;

// Verifies request b. scratch t: the target rows' kept sets, d: the draft rows'.
void verify_request(const ChainRequest& cr, const ChainOutputs& out, int64_t b, const Scratch& t,
                    const Scratch& d, int32_t* history, RowFns fns) {
  const DistFn dist = fns.dist;
  const int64_t v = cr.target.vocab;
  const int64_t r0 = cr.row_offsets[b], k = cr.row_offsets[b + 1] - r0 - 1;
  const int64_t d0 = r0 - b;  // this request's first draft
  const core::RowSettings rs = core::load_row_settings(cr.params, b);
  int64_t h = load_history(cr, b, history);
  for (int64_t j = 0; j <= k; ++j) out.tokens[r0 + j] = -1;
  if (out.logprobs)
    for (int64_t j = 0; j <= k; ++j) out.logprobs[r0 + j] = core::neg_inf();
  // token x emitted at position j (t holds the position's row)
  const auto emit = [&](int64_t j, int32_t x) {
    out.tokens[r0 + j] = x;
    if (out.logprobs) out.logprobs[r0 + j] = fns.logprob(t, cr.target.vocab, x);
  };
  out.accepted[b] = 0;
  out.status[b] = kRowOk;
  for (int64_t j = 0; j <= k; ++j) {
    int64_t n = 0;
    uint64_t wp = 0;
    const int32_t st = target_distribution(cr, b, r0 + j, t, history, h, dist, &n, &wp);
    if (st != kRowOk) {
      out.status[b] = st;
      out.accepted[b] = static_cast<int32_t>(j);
      return;
    }
    if (j == k) {  // every draft accepted: the bonus token, as sample() draws it
      const uint64_t u =
          core::row_uniform64(rs.seed, rs.step, core::draw_substream(rs.substream, j));
      const uint64_t tt = core::scale_draw(u, wp);
      uint64_t acc = 0;
      for (int64_t i = 0; i < n; ++i) {
        acc += t.w[i];
        if (acc > tt) {
          emit(j, t.ids[i]);
          break;
        }
      }
      out.accepted[b] = static_cast<int32_t>(k);
      return;
    }
    const int32_t x = cr.draft_tokens[d0 + j];
    // the draft's distribution at this position: v(x) and its total
    int64_t dn = 0;
    uint64_t wq = 0;
    const float* probs = nullptr;
    bool deterministic = cr.draft_kind == DraftKind::kDeterministic;
    if (cr.draft_kind == DraftKind::kLogits) {
      const void* drow = static_cast<const char*>(cr.draft.data) +
                         (d0 + j) * stride_of(cr.draft) * esize(cr.draft.dtype);
      PositionRequest dp;
      position_request(dp, cr, b, drow, cr.draft, r0 + j, history, h);
      if (dist(d, dp.req, 0, stride_of(cr.draft), api::mask_words_of(dp.req), &dn, &wq) != kRowOk)
        wq = 0;
    } else if (cr.draft_kind == DraftKind::kProbs) {
      probs = reinterpret_cast<const float*>(static_cast<const char*>(cr.draft.data) +
                                             (d0 + j) * stride_of(cr.draft) * 4);
      for (int64_t i = 0; i < v; ++i) wq += prob_weight(probs[i]);
    }
    if (!deterministic && wq == 0) deterministic = true;  // no draft mass: mass 1 on x
    const auto draft_weight = [&](int32_t y) -> uint64_t {
      if (deterministic) return y == x ? 1 : 0;
      if (probs) return prob_weight(probs[y]);
      return weight_of(d, dn, y);
    };
    if (deterministic) wq = 1;
    const uint64_t ua =
        core::row_uniform64(rs.seed, rs.step, core::accept_substream(rs.substream, j));
    if (core::accept_draft(ua, weight_of(t, n, x), wp, draft_weight(x), wq)) {
      emit(j, x);
      history[h++] = x;
      continue;
    }
    // rejected: the recovered token from the residual max(0, p - q), in token-id order over the
    // target's kept set (the residual is 0 elsewhere)
    core::U128 total{0, 0};
    for (int64_t i = 0; i < n; ++i)
      total = core::u128_add(total, core::residual_weight(t.w[i], wp, draft_weight(t.ids[i]), wq));
    const uint64_t u = core::row_uniform64(rs.seed, rs.step, core::draw_substream(rs.substream, j));
    const core::U128 tt = core::u128_scale(u, total);
    core::U128 acc{0, 0};
    for (int64_t i = 0; i < n; ++i) {
      acc = core::u128_add(acc, core::residual_weight(t.w[i], wp, draft_weight(t.ids[i]), wq));
      if (core::u128_less(tt, acc)) {
        emit(j, t.ids[i]);
        break;
      }
    }
    out.accepted[b] = static_cast<int32_t>(j);
    return;
  }
}

// Verifies request b's tree (deterministic drafts): at each node, its children in index order
// are tested against what is left of the node's distribution once the rejected siblings' tokens
// are taken out (accepted with probability r(x) / R); where none is accepted the token is drawn
// from that rest. Equal, for a chain-shaped tree, to verify_chain with deterministic drafts.
void verify_tree_request(const TreeRequest& tr, const TreeOutputs& out, int64_t b, const Scratch& t,
                         int32_t* history, int32_t* removed, RowFns fns) {
  const DistFn dist = fns.dist;
  const int64_t n0 = tr.node_offsets[b], m = tr.node_offsets[b + 1] - n0;
  const core::RowSettings rs = core::load_row_settings(tr.params, b);
  int64_t h = load_history(tr, b, history);
  for (int64_t i = 0; i < m; ++i) out.path[n0 + i] = out.tokens[n0 + i] = -1;
  if (out.logprobs)
    for (int64_t i = 0; i < m; ++i) out.logprobs[n0 + i] = core::neg_inf();
  // token x emitted at depth `at` (t holds its node's row)
  const auto emit = [&](int64_t at, int32_t x) {
    out.tokens[n0 + at] = x;
    if (out.logprobs) out.logprobs[n0 + at] = fns.logprob(t, tr.target.vocab, x);
  };
  out.accepted[b] = 0;
  out.status[b] = kRowOk;
  int64_t node = 0, depth = 0;
  for (;;) {
    int64_t n = 0;
    uint64_t rest = 0;
    const int32_t st = target_distribution(tr, b, n0 + node, t, history, h, dist, &n, &rest);
    if (st != kRowOk) {
      out.status[b] = st;
      out.accepted[b] = static_cast<int32_t>(depth);
      return;
    }
    int64_t nrem = 0;
    const auto weight_left = [&](int32_t x) -> uint64_t {
      for (int64_t i = 0; i < nrem; ++i)
        if (removed[i] == x) return 0;
      return weight_of(t, n, x);
    };
    int64_t next = -1;
    for (int64_t c = node + 1; c < m; ++c) {
      if (tr.parents[n0 + c] != node) continue;
      const int32_t x = tr.tokens[n0 + c];
      const uint64_t wx = weight_left(x);
      const uint64_t u =
          core::row_uniform64(rs.seed, rs.step, core::accept_substream(rs.substream, c - 1));
      if (wx > 0 && core::scale_draw(u, rest) < wx) {
        next = c;
        break;
      }
      if (wx > 0) {
        rest -= wx;
        removed[nrem++] = x;
      }
    }
    if (next >= 0) {
      const int32_t x = tr.tokens[n0 + next];
      out.path[n0 + depth] = static_cast<int32_t>(next);
      emit(depth, x);
      history[h++] = x;
      ++depth;
      node = next;
      continue;
    }
    // no child accepted: the token from the rest, in token-id order
    const uint64_t u =
        core::row_uniform64(rs.seed, rs.step, core::draw_substream(rs.substream, node));
    const uint64_t tt = core::scale_draw(u, rest);
    uint64_t acc = 0;
    for (int64_t i = 0; i < n; ++i) {
      acc += weight_left(t.ids[i]) > 0 ? t.w[i] : 0;
      if (acc > tt) {
        emit(depth, t.ids[i]);
        break;
      }
    }
    out.accepted[b] = static_cast<int32_t>(depth);
    return;
  }
}

// Runs f(b, target scratch, draft scratch, history, removed) for each request over the threads.
template <typename Req, typename F>
Status for_each_request(const Req& req, void* workspace, size_t workspace_bytes,
                        const ExecConfig& cfg, size_t need, F f) {
  if (workspace_bytes < need)
    return Status{Code::kWorkspaceTooSmall, "workspace of " + std::to_string(workspace_bytes) +
                                                " bytes is smaller than the " +
                                                std::to_string(need) + " bytes asked for"};
  const int threads = threads_for_chain(req, cfg);
  const size_t per_thread = per_thread_bytes(req);
  char* base = static_cast<char*>(workspace);
  base += (kAlign - reinterpret_cast<uintptr_t>(base) % kAlign) % kAlign;
  const int64_t v = req.target.vocab;
  const size_t hist_bytes = align_up(static_cast<size_t>(max_history(req) + 1) * sizeof(int32_t));
#pragma omp parallel num_threads(threads)
  {
    char* mine = base + static_cast<size_t>(omp_get_thread_num()) * per_thread;
    const Scratch t = Scratch::carve(mine, v);
    const Scratch d = Scratch::carve(mine + Scratch::bytes(v), v);
    int32_t* history = reinterpret_cast<int32_t*>(mine + 2 * Scratch::bytes(v));
    int32_t* removed = reinterpret_cast<int32_t*>(mine + 2 * Scratch::bytes(v) + hist_bytes);
    std::memset(t.tags, 0, static_cast<size_t>(v) * sizeof(uint32_t));
    std::memset(d.tags, 0, static_cast<size_t>(v) * sizeof(uint32_t));
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < req.requests; ++b) f(b, t, d, history, removed);
  }
  return Status::Ok();
}

}  // namespace

template <typename Req>
size_t workspace_for(const Req& req, const ExecConfig& cfg) {
  if (req.requests <= 0 || !offsets_of(req)) return kAlign;
  return static_cast<size_t>(threads_for_chain(req, cfg)) * per_thread_bytes(req) + kAlign;
}

size_t verify_tree_workspace_size(const TreeRequest& req, const ExecConfig& cfg) {
  return workspace_for(req, cfg);
}

Status verify_tree(const TreeRequest& req, const TreeOutputs& out, void* workspace,
                   size_t workspace_bytes, const ExecConfig& cfg) {
  const RowFns fns{row_distribution_fn(), row_logprob_fn()};
  return for_each_request(
      req, workspace, workspace_bytes, cfg, cpu::verify_tree_workspace_size(req, cfg),
      [&](int64_t b, const Scratch& t, const Scratch&, int32_t* history, int32_t* removed) {
        verify_tree_request(req, out, b, t, history, removed, fns);
      });
}

size_t verify_chain_workspace_size(const ChainRequest& req, const ExecConfig& cfg) {
  return workspace_for(req, cfg);
}

Status verify_chain(const ChainRequest& req, const ChainOutputs& out, void* workspace,
                    size_t workspace_bytes, const ExecConfig& cfg) {
  const RowFns fns{row_distribution_fn(), row_logprob_fn()};
  return for_each_request(req, workspace, workspace_bytes, cfg,
                          cpu::verify_chain_workspace_size(req, cfg),
                          [&](int64_t b, const Scratch& t, const Scratch& d, int32_t* history,
                              int32_t*) { verify_request(req, out, b, t, d, history, fns); });
}

}  // namespace lmsample::cpu

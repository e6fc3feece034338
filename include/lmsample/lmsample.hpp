// lmsample: logits [B, V] in, next-token ids out. C++17 API.
//
// Every row's result is a pure function of (its logits row, its parameters, its seed, its step,
// its substream): the same token, status, kept-set size and logprobs on every backend, for any
// batch size, row position and thread count. docs/contract.md states the contract exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lmsample {

//! Element type of the logits.
enum class DType : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

//! Where a call runs. kAuto picks the GPU backend the library was built with (CUDA or HIP) when
//! a device is present, else the CPU. A library has at most one GPU backend.
enum class Backend : int32_t { kAuto = 0, kCpu = 1, kCuda = 2, kHip = 3 };

//! Per-row outcome, written to Outputs::status for every row of every call that passes the
//! structural checks. Values are stable (they are part of the C API).
enum RowStatus : int32_t {
  kRowOk = 0,                    //!< a token was drawn
  kRowEmpty = 1,                 //!< no drawable token (all masked, -inf or NaN); token -1
  kRowBadTemperature = 2,        //!< temperature < 0, NaN or +inf; token -1
  kRowBadTopK = 3,               //!< top_k < 0; token -1
  kRowBadTopP = 4,               //!< top_p <= 0 or NaN; token -1
  kRowBadMinP = 5,               //!< min_p outside [0, 1] or NaN; token -1
  kRowBadRepetitionPenalty = 6,  //!< repetition_penalty <= 0, NaN or inf; token -1
  kRowBadFrequencyPenalty = 7,   //!< frequency_penalty outside [-2, 2] or NaN; token -1
  kRowBadPresencePenalty = 8,    //!< presence_penalty outside [-2, 2] or NaN; token -1
  kRowBadTokenId = 9,            //!< a bias, history or draft token id outside [0, V); token -1
  //! verification on a GPU backend (which cannot read the device's offsets, drafts or trees on
  //! the host): the request's offsets, tree or draft probabilities are wrong; tokens -1
  kRowBadDraft = 10,
};

//! Name of a row status ("ok", "empty", "bad_temperature", ...).
const char* row_status_name(int32_t status) noexcept;

//! Call-level result codes.
enum class Code : int32_t {
  kOk = 0,
  kInvalidArgument = 1,  //!< the request's shape or pointers are wrong; nothing written
  kInvalidRowParameter =
      2,                   //!< some rows had bad parameters; see Outputs::status (all rows written)
  kWorkspaceTooSmall = 3,  //!< workspace smaller than workspace_size(); nothing written
  kUnsupported = 4,        //!< backend not built in or no device present
  kBackendError = 5,       //!< the device runtime failed (message says how)
};

//! Result of a call: a code and, when not kOk, a message naming what is wrong
//! (for row parameters: the first bad row and the parameter).
struct Status {
  Code code = Code::kOk;
  std::string message;
  bool ok() const noexcept { return code == Code::kOk; }
  static Status Ok() { return {}; }
};

//! The logits: `batch` rows of `vocab` elements, row i starting at data + i * row_stride elements.
struct Logits {
  const void* data = nullptr;
  DType dtype = DType::kFloat32;
  int64_t batch = 0;
  int64_t vocab = 0;       //!< 1 <= vocab <= kMaxVocab
  int64_t row_stride = 0;  //!< in elements; 0 means `vocab`; otherwise >= vocab
};

//! Largest supported vocabulary: fixed-point masses (2^39 per unit) of 2^24 tokens fit in 64 bits.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
//! Largest number of top logprobs per row.
constexpr int32_t kMaxTopLogprobs = 64;
//! Most CPU threads a call may ask for (ExecConfig::cpu_threads); more is kInvalidArgument.
constexpr int kMaxCpuThreads = 1024;

//! The value of each parameter for the rows of a call whose RowParams array is null: one value
//! for the whole batch, passed by value (no device memory, nothing to upload: a GPU call with
//! these stays capturable in a CUDA graph with the values baked in). The initial values are the
//! parameters' defaults. A value that is used (its array is null) and is not valid is a
//! structural error (kInvalidArgument, nothing written), checked on the host for every backend.
struct RowDefaults {
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;
  uint32_t substream = 0;
};

//! Per-row parameters. Each pointer is either null (every row takes `defaults`' value) or points
//! to `batch` values. Defaults: temperature 1, top_k 0 (off), top_p 1 (off), min_p 0 (off),
//! penalties off (repetition 1, frequency 0, presence 0), seed 0, step 0, substream 0.
struct RowParams {
  const float* temperature = nullptr;  //!< 0 = greedy (lowest id among ties); >= 0, finite
  const int32_t* top_k = nullptr;      //!< 0 = off; k >= valid tokens = off; ties to the k-th kept
  const float* top_p = nullptr;        //!< in (0, 1]; >= 1 = off
  const float* min_p = nullptr;        //!< in [0, 1]; 0 = off
  const float* repetition_penalty = nullptr;  //!< > 0, finite; 1 = off
  const float* frequency_penalty = nullptr;   //!< in [-2, 2]
  const float* presence_penalty = nullptr;    //!< in [-2, 2]
  const uint64_t* seed = nullptr;             //!< Philox key of the row
  const uint64_t* step = nullptr;             //!< Philox counter (the decoding step)
  const uint32_t* substream = nullptr;        //!< reserved sub-stream id (e.g. speculative drafts)
  RowDefaults defaults;                       //!< the value of every null array above
};

//! Row-sparse data in CSR form: row r owns entries [offsets[r], offsets[r+1]).
//! offsets has batch+1 entries (offsets[0] need not be 0); null offsets means "none".
struct SparseRows {
  const int64_t* offsets = nullptr;
  const int32_t* tokens = nullptr;
  const float* values = nullptr;  //!< only for logit bias; ignored for token histories
};

//! One sampling request.
struct Request {
  Logits logits;
  RowParams params;
  //! Optional allowed-token bitmask, [batch, mask_row_words] 32-bit words; bit (t % 32) of word
  //! (t / 32) set = token t allowed (the layout xgrammar emits). Null = all allowed.
  const uint32_t* allowed_mask = nullptr;
  int64_t mask_row_words = 0;  //!< 0 means ceil(vocab / 32); otherwise >= that
  //! Optional additive logit bias per row (duplicates add up, in the order given).
  SparseRows logit_bias;
  //! Optional prompt tokens per row: repetition penalty only.
  SparseRows prompt_tokens;
  //! Optional generated tokens per row: repetition, frequency (per occurrence) and presence.
  SparseRows output_tokens;
  //! Number of top logprobs to return per row, 0..kMaxTopLogprobs.
  int32_t top_logprobs = 0;
};

//! Outputs; every array has `batch` entries (top arrays: batch * top_logprobs).
//! Required: tokens and status. Optional (null = not computed): logprob, kept, top_ids,
//! top_logprobs.
struct Outputs {
  int32_t* tokens = nullptr;      //!< drawn token, or -1 when status != kRowOk
  int32_t* status = nullptr;      //!< RowStatus
  float* logprob = nullptr;       //!< log-softmax of the processed logits at the chosen token
  int32_t* kept = nullptr;        //!< size of the kept set the token was drawn from
  int32_t* top_ids = nullptr;     //!< [batch, top_logprobs], highest first, -1 padded
  float* top_logprobs = nullptr;  //!< [batch, top_logprobs], -inf padded
};

//! Where a GPU call keeps a row's order keys between its passes (results never depend on it).
//!  - kOnChip: in shared memory (several CTAs per row so that a row fits; the caller's workspace
//!    for vocabularies too large for that). The logits are read once and every later pass runs
//!    on chip: best for requests whose rows need full passes over the vocabulary (top-p without
//!    top-k, temperature alone, logprobs).
//!  - kStream: nowhere: the keys are recomputed from the logits whenever a pass needs them again
//!    (for requests with logit bias or penalties, kOnChip is used instead). Fewer CTAs and far
//!    less shared memory per row, so loads overlap the on-chip work: best at large batches for
//!    greedy, top-k (k <= 512, with or without top-p) and min-p, whose rows finish from the
//!    load's statistics; full passes then re-read the logits.
//!  - kAuto: kStream for requests that carry a top_k or min_p array, or a top_k > 0 or
//!    min_p > 0 in RowParams::defaults, or whose rows are all greedy by RowParams::defaults
//!    (temperature 0 and no temperature array) (without top logprobs, or with them from batch
//!    128 on),
//!    else kOnChip; kStream wherever the keys would otherwise go to the workspace. (A policy from
//!    H100 measurements, results/gpu/README.md: the host does not read the rows' arrays, only
//!    which are given, and the defaults.)
enum class GpuKeys : int32_t { kAuto = 0, kOnChip = 1, kStream = 2 };

//! How a call runs. For kCuda and kHip, every pointer in Request and Outputs and the workspace
//! are device pointers, and the call is asynchronous on `stream` (a cudaStream_t / hipStream_t,
//! null = the default stream).
struct ExecConfig {
  Backend backend = Backend::kCpu;
  //! 0 = all hardware threads (at most kMaxCpuThreads), else 1 .. kMaxCpuThreads (other values
  //! are kInvalidArgument); results never depend on it
  int cpu_threads = 0;
  void* stream = nullptr;             //!< cudaStream_t / hipStream_t
  GpuKeys gpu_keys = GpuKeys::kAuto;  //!< GPU backends only; see GpuKeys
};

//! Bytes of workspace sample() needs for this request (pointers in `req` may be null here).
//! Cost: O(1). Never allocates.
size_t workspace_size(const Request& req, const ExecConfig& cfg);

//! Samples one token per row. The caller provides `workspace` of at least workspace_size() bytes.
//! Never allocates on the hot path. Deterministic: see docs/contract.md.
Status sample(const Request& req, const Outputs& out, void* workspace, size_t workspace_bytes,
              const ExecConfig& cfg);

// ---- speculative decoding: chain verification (docs/contract.md, section 8) ----------------

//! Largest number of drafts one request of verify_chain may carry.
constexpr int32_t kMaxDrafts = 64;

//! What a request's drafts were proposed from.
enum class DraftKind : int32_t {
  kDeterministic = 0,  //!< no distribution: mass 1 on the draft token (n-grams, greedy EAGLE)
  kLogits = 1,  //!< draft logits, processed with the request's parameters as the target row is
  kProbs = 2,   //!< draft probabilities (fp32 in [0, 1], need not sum to 1), as the draft sampled
};

//! Chain verification of B requests. Request b has K_b = row_offsets[b + 1] - row_offsets[b] - 1
//! drafts (0 <= K_b <= kMaxDrafts): target rows row_offsets[b] .. row_offsets[b + 1] - 1 of
//! `target` (position j = 0 .. K_b), drafts draft_tokens[row_offsets[b] - b + j] (j < K_b), and
//! for kLogits / kProbs a draft row at the same index of `draft`. Host pointers (CPU backend).
struct ChainRequest {
  Logits target;                          //!< [N, V], N = row_offsets[B]
  const int64_t* row_offsets = nullptr;   //!< B + 1 entries, row_offsets[0] = 0, increasing
  int64_t requests = 0;                   //!< B >= 0
  const int32_t* draft_tokens = nullptr;  //!< N - B ids in [0, V)
  DraftKind draft_kind = DraftKind::kDeterministic;
  Logits draft;  //!< kLogits: [N - B, V], any dtype; kProbs: [N - B, V] fp32; else unused
  //! Per request (B entries), applied to every target position (and draft row) as sample()
  //! applies them. seed and step key the decisions; substream is the base of their substreams.
  RowParams params;
  //! Optional per target row (N rows): the allowed-token bitmask of each position.
  const uint32_t* allowed_mask = nullptr;
  int64_t mask_row_words = 0;  //!< 0 means ceil(V / 32)
  SparseRows logit_bias;       //!< per request
  SparseRows prompt_tokens;    //!< per request
  //! Per request: the generated tokens before the drafts; position j adds drafts 0 .. j - 1.
  SparseRows output_tokens;
  //! Optional: the most drafts any request of the call has (0: not stated, kMaxDrafts). A
  //! request with more is a structural error (on a GPU, status kRowBadDraft). A GPU backend,
  //! which does not read row_offsets, computes a large batch's rows in rounds of positions and
  //! needs this bound to know how many rounds to launch: state it (engines know their K).
  int32_t max_drafts = 0;
};

//! Outputs of verify_chain: accepted and status per request; tokens packed like the target rows.
struct ChainOutputs {
  int32_t* accepted = nullptr;  //!< [B] drafts accepted (0 .. K_b)
  //! [N]: request b's row_offsets[b] .. row_offsets[b + 1] - 1 get its accepted drafts, then the
  //! recovered or bonus token, then -1.
  int32_t* tokens = nullptr;
  int32_t* status = nullptr;  //!< [B] kRowOk, or the status of the position that stopped it
  //! Optional [N]: each emitted token's logprob in the row it was emitted from (section 5:
  //! log-softmax of the processed logits at T = 1), -inf after.
  float* logprobs = nullptr;
};

//! Bytes of workspace verify_chain needs (on the CPU it reads req.row_offsets and the
//! output_tokens offsets; on a GPU only the shapes the request states).
size_t verify_chain_workspace_size(const ChainRequest& req, const ExecConfig& cfg);

//! Verifies each request's drafts against its target rows (docs/contract.md, section 8): every
//! emitted token is distributed exactly as sampling the target alone would give, decided by
//! Philox uniforms of the request's seed and step, so results are bit-identical everywhere.
//! Every backend, the same bits. Structural errors (shapes, a draft id outside [0, V), a draft
//! probability outside [0, 1], K_b > kMaxDrafts) name the request and write nothing; on a GPU
//! backend, whose offsets, drafts and probabilities are device memory the host does not read,
//! the device reports those of them in the request's status (kRowBadTokenId, kRowBadDraft;
//! docs/contract.md, section 8), asynchronously on cfg.stream.
Status verify_chain(const ChainRequest& req, const ChainOutputs& out, void* workspace,
                    size_t workspace_bytes, const ExecConfig& cfg);

//! Largest number of nodes (the root included) of one request's draft tree in verify_tree.
constexpr int32_t kMaxTreeNodes = 1024;

//! Tree verification (EAGLE / Medusa token trees: deterministic drafts). Request b's tree is nodes
//! node_offsets[b] .. node_offsets[b + 1] - 1; its first node is the root (the context so far,
//! parent -1), every other node i has a parent among the nodes before it (parents[i] is an index
//! within the request, 0 = the root) and a draft token tokens[i]; node i's target row is row i of
//! `target`: the target's next-token logits after the path root .. i. Host pointers (CPU).
struct TreeRequest {
  Logits target;                          //!< [N, V], N = node_offsets[B]
  const int64_t* node_offsets = nullptr;  //!< B + 1 entries, node_offsets[0] = 0, increasing
  int64_t requests = 0;                   //!< B >= 0
  const int32_t* parents = nullptr;       //!< [N]: -1 for a root, else the parent's index
  const int32_t* tokens = nullptr;        //!< [N]: each non-root node's draft token in [0, V)
  //! Per request, applied to every node's row as sample() applies them (with the path's tokens
  //! added to the output history); seed, step and substream as in verify_chain.
  RowParams params;
  const uint32_t* allowed_mask = nullptr;  //!< optional, per node row (N rows)
  int64_t mask_row_words = 0;
  SparseRows logit_bias;     //!< per request
  SparseRows prompt_tokens;  //!< per request
  SparseRows output_tokens;  //!< per request: the history before the root
  //! Optional: the deepest node of any request's tree, in drafts below the root (0: not stated,
  //! kMaxDrafts). A deeper node is a structural error (on a GPU, status kRowBadDraft); a GPU
  //! backend launches one round per level of a large batch's paths, as many as this says.
  int32_t max_depth = 0;
};

//! Outputs of verify_tree; path and tokens are packed like the nodes.
struct TreeOutputs {
  int32_t* accepted = nullptr;  //!< [B] nodes accepted below the root (the path's length)
  int32_t* path = nullptr;      //!< [N]: the accepted nodes' indices from the root down, then -1
  int32_t* tokens = nullptr;    //!< [N]: their tokens, then the token emitted after them, then -1
  int32_t* status = nullptr;    //!< [B]
  float* logprobs = nullptr;    //!< optional [N]: each emitted token's logprob (as ChainOutputs)
};

//! Bytes of workspace verify_tree needs.
size_t verify_tree_workspace_size(const TreeRequest& req, const ExecConfig& cfg);

//! Verifies each request's draft tree by recursive rejection over siblings (docs/contract.md,
//! section 8): the emitted path is distributed exactly as sampling the target alone. Every
//! backend, the same bits. Structural errors (a parent at or after its child, a root that is not
//! first, a token outside [0, V), more than kMaxTreeNodes nodes, a node deeper than kMaxDrafts)
//! name the request and node and write nothing; on a GPU backend the device reports them in the
//! request's status (as verify_chain).
Status verify_tree(const TreeRequest& req, const TreeOutputs& out, void* workspace,
                   size_t workspace_bytes, const ExecConfig& cfg);

//! Whether a backend is usable here (built in and, for GPUs, a device present).
bool backend_available(Backend backend);

//! The backend kAuto resolves to.
Backend resolve_backend(Backend backend);

//! Library version string.
const char* version() noexcept;

//! Version of the sampling contract (docs/contract.md) this library implements: the same
//! inputs give the same tokens, statuses and kept sizes in every build of one contract version.
//! 2: exp with fused multiply-adds (1: without; some likelihoods differ in the last bit).
int contract_version() noexcept;

}  // namespace lmsample

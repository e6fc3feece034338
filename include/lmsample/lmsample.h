/* lmsample C API: the C++ API (lmsample.hpp) with plain structs and status codes.
 * No exception crosses this boundary. The meaning of every field is the same as in lmsample.hpp
 * and docs/contract.md. Fill structs with lms_request_init() / lms_outputs_init() /
 * lms_exec_init() first, so that fields you leave alone take their defaults. */
#ifndef LMSAMPLE_H_
#define LMSAMPLE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Call-level codes (same values as lmsample::Code). */
#define LMS_OK 0
#define LMS_INVALID_ARGUMENT 1
#define LMS_INVALID_ROW_PARAMETER 2
#define LMS_WORKSPACE_TOO_SMALL 3
#define LMS_UNSUPPORTED 4
#define LMS_BACKEND_ERROR 5
#define LMS_INTERNAL_ERROR 6

/* Row statuses (same values as lmsample::RowStatus). */
#define LMS_ROW_OK 0
#define LMS_ROW_EMPTY 1
#define LMS_ROW_BAD_TEMPERATURE 2
#define LMS_ROW_BAD_TOP_K 3
#define LMS_ROW_BAD_TOP_P 4
#define LMS_ROW_BAD_MIN_P 5
#define LMS_ROW_BAD_REPETITION_PENALTY 6
#define LMS_ROW_BAD_FREQUENCY_PENALTY 7
#define LMS_ROW_BAD_PRESENCE_PENALTY 8
#define LMS_ROW_BAD_TOKEN_ID 9
#define LMS_ROW_BAD_DRAFT 10

/* Element types and backends. */
#define LMS_DTYPE_F32 0
#define LMS_DTYPE_BF16 1
#define LMS_DTYPE_F16 2
#define LMS_BACKEND_AUTO 0
#define LMS_BACKEND_CPU 1
#define LMS_BACKEND_CUDA 2
#define LMS_BACKEND_HIP 3

typedef struct lms_sparse_rows {
  const int64_t* offsets; /* batch + 1 entries, or NULL for none */
  const int32_t* tokens;
  const float* values; /* logit bias only */
} lms_sparse_rows;

/* The value of each parameter for every row whose array in lms_request is NULL (lmsample::
 * RowDefaults): one value for the batch, passed by value. lms_request_init() sets the defaults
 * (temperature 1, top_k 0, top_p 1, min_p 0, repetition 1, frequency 0, presence 0, seed 0,
 * step 0, substream 0). A used value that is not valid is LMS_INVALID_ARGUMENT. */
typedef struct lms_row_defaults {
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
  float repetition_penalty;
  float frequency_penalty;
  float presence_penalty;
  uint64_t seed;
  uint64_t step;
  uint32_t substream;
} lms_row_defaults;

typedef struct lms_request {
  const void* logits;
  int32_t dtype;
  int64_t batch;
  int64_t vocab;
  int64_t row_stride; /* elements; 0 = vocab */
  /* per-row parameters: NULL = default for every row */
  const float* temperature;
  const int32_t* top_k;
  const float* top_p;
  const float* min_p;
  const float* repetition_penalty;
  const float* frequency_penalty;
  const float* presence_penalty;
  const uint64_t* seed;
  const uint64_t* step;
  const uint32_t* substream;
  lms_row_defaults defaults; /* the value of every NULL parameter array above */
  const uint32_t* allowed_mask;
  int64_t mask_row_words; /* 0 = ceil(vocab / 32) */
  lms_sparse_rows logit_bias;
  lms_sparse_rows prompt_tokens;
  lms_sparse_rows output_tokens;
  int32_t top_logprobs;
} lms_request;

typedef struct lms_outputs {
  int32_t* tokens;
  int32_t* status;
  float* logprob;
  int32_t* kept;
  int32_t* top_ids;
  float* top_logprobs;
} lms_outputs;

/* lms_exec.gpu_keys (lmsample::GpuKeys): where a GPU call keeps its keys between passes */
#define LMS_GPU_KEYS_AUTO 0
#define LMS_GPU_KEYS_ON_CHIP 1
#define LMS_GPU_KEYS_STREAM 2

typedef struct lms_exec {
  int32_t backend;
  int32_t cpu_threads;
  void* stream;
  int32_t gpu_keys; /* LMS_GPU_KEYS_* */
} lms_exec;

void lms_request_init(lms_request* req);
void lms_outputs_init(lms_outputs* out);
void lms_exec_init(lms_exec* exec); /* backend CPU, all threads, default stream, GPU keys auto */

/* Writes the workspace size in bytes to *bytes. Returns an LMS_* code. */
int lms_workspace_size(const lms_request* req, const lms_exec* exec, size_t* bytes);

/* Samples one token per row. Returns an LMS_* code; on anything but LMS_OK,
 * lms_last_error() describes it (thread-local, valid until the next call on this thread). */
int lms_sample(const lms_request* req, const lms_outputs* out, void* workspace,
               size_t workspace_bytes, const lms_exec* exec);

/* ---- speculative decoding (lmsample::verify_chain / verify_tree, docs/contract.md section 8;
 * every backend; on a GPU, LMS_ROW_BAD_DRAFT reports what only the device can check) ---- */
#define LMS_DRAFT_DETERMINISTIC 0
#define LMS_DRAFT_LOGITS 1
#define LMS_DRAFT_PROBS 2
#define LMS_MAX_DRAFTS 64
#define LMS_MAX_CPU_THREADS 1024 /* lms_exec.cpu_threads: 0 (all) to this */
#define LMS_MAX_TREE_NODES 1024

/* Chain verification. `target` carries the target logits ([N, V]: batch = N rows), the per-request
 * parameters (arrays of `requests` entries), the per-row bitmask and the per-request bias, prompt
 * and output history, as lmsample::ChainRequest has them; its top_logprobs is not used. */
typedef struct lms_chain_request {
  lms_request target;
  const int64_t* row_offsets; /* requests + 1 entries */
  int64_t requests;
  const int32_t* draft_tokens; /* N - requests ids */
  int32_t draft_kind;          /* LMS_DRAFT_* */
  const void* draft;           /* LMS_DRAFT_LOGITS / PROBS: [N - requests, V] */
  int32_t draft_dtype;         /* LMS_DTYPE_* (PROBS: LMS_DTYPE_F32) */
  int64_t draft_row_stride;    /* elements; 0 = V */
  int32_t max_drafts;          /* optional: the most drafts of any request (0: not stated) */
} lms_chain_request;
typedef struct lms_chain_outputs {
  int32_t* accepted; /* [requests] */
  int32_t* tokens;   /* [N] */
  int32_t* status;   /* [requests] */
  float* logprobs;   /* optional [N]: each emitted token's logprob, or NULL */
} lms_chain_outputs;
/* Tree verification (deterministic drafts): `target` as above, rows one per node. */
typedef struct lms_tree_request {
  lms_request target;
  const int64_t* node_offsets; /* requests + 1 entries */
  int64_t requests;
  const int32_t* parents; /* [N]: -1 for a root, else the parent's index within the request */
  const int32_t* tokens;  /* [N] */
  int32_t max_depth;      /* optional: the deepest node of any tree (0: not stated) */
} lms_tree_request;
typedef struct lms_tree_outputs {
  int32_t* accepted; /* [requests] */
  int32_t* path;     /* [N] */
  int32_t* tokens;   /* [N] */
  int32_t* status;   /* [requests] */
  float* logprobs;   /* optional [N], or NULL */
} lms_tree_outputs;
void lms_chain_request_init(lms_chain_request* req);
void lms_tree_request_init(lms_tree_request* req);
int lms_verify_chain_workspace_size(const lms_chain_request* req, const lms_exec* exec,
                                    size_t* bytes);
int lms_verify_chain(const lms_chain_request* req, const lms_chain_outputs* out, void* workspace,
                     size_t workspace_bytes, const lms_exec* exec);
int lms_verify_tree_workspace_size(const lms_tree_request* req, const lms_exec* exec,
                                   size_t* bytes);
int lms_verify_tree(const lms_tree_request* req, const lms_tree_outputs* out, void* workspace,
                    size_t workspace_bytes, const lms_exec* exec);

const char* lms_last_error(void);
const char* lms_row_status_name(int32_t status);
int lms_backend_available(int32_t backend);
const char* lms_version(void);
/* Version of the sampling contract (docs/contract.md); see lmsample::contract_version(). */
int lms_contract_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LMSAMPLE_H_ */

/* Compiled as C: the header is valid C, and a plain C caller can sample a small batch. */
#include <stdlib.h>

#include "lmsample/lmsample.h"

/* Samples 2 rows of 5 logits greedily; returns 0 when token ids are {3, 0}, else a failure code. */
int lms_c_smoke(void) {
  const float logits[10] = {0.f, 1.f, 2.f, 5.f, 4.f, 9.f, 1.f, 2.f, 3.f, 4.f};
  const float temperature[2] = {0.f, 0.f};
  int32_t tokens[2] = {-7, -7};
  int32_t status[2] = {-7, -7};
  lms_request req;
  lms_outputs out;
  lms_exec exec;
  size_t bytes = 0;
  void* ws;
  int rc;
  lms_request_init(&req);
  lms_outputs_init(&out);
  lms_exec_init(&exec);
  req.logits = logits;
  req.dtype = LMS_DTYPE_F32;
  req.batch = 2;
  req.vocab = 5;
  req.temperature = temperature;
  out.tokens = tokens;
  out.status = status;
  rc = lms_workspace_size(&req, &exec, &bytes);
  if (rc != LMS_OK) return 100 + rc;
  ws = malloc(bytes + 1);
  if (!ws) return 200;
  rc = lms_sample(&req, &out, ws, bytes, &exec);
  free(ws);
  if (rc != LMS_OK) return 300 + rc;
  if (tokens[0] != 3 || tokens[1] != 0) return 400;
  if (status[0] != LMS_ROW_OK || status[1] != LMS_ROW_OK) return 500;
  return 0;
}

/* Greedy chain verification from C: one request, the 5 logits of the first row above as both
 * target rows and draft 3 (the argmax): accepted, then the bonus argmax 3. Returns 0 on success. */
int lms_c_verify_smoke(void) {
  const float target[10] = {0.f, 1.f, 2.f, 5.f, 4.f, 0.f, 1.f, 2.f, 5.f, 4.f};
  const float temperature[1] = {0.f};
  const int64_t offsets[2] = {0, 2};
  const int32_t drafts[1] = {3};
  int32_t accepted = -7, tokens[2] = {-7, -7}, status = -7;
  lms_chain_request req;
  lms_chain_outputs out;
  lms_exec exec;
  size_t bytes = 0;
  void* ws;
  int rc;
  lms_chain_request_init(&req);
  lms_exec_init(&exec);
  req.target.logits = target;
  req.target.dtype = LMS_DTYPE_F32;
  req.target.batch = 2;
  req.target.vocab = 5;
  req.target.temperature = temperature;
  req.row_offsets = offsets;
  req.requests = 1;
  req.draft_tokens = drafts;
  req.draft_kind = LMS_DRAFT_DETERMINISTIC;
  out.accepted = &accepted;
  out.tokens = tokens;
  out.status = &status;
  out.logprobs = NULL;
  rc = lms_verify_chain_workspace_size(&req, &exec, &bytes);
  if (rc != LMS_OK) return 100 + rc;
  ws = malloc(bytes + 1);
  if (!ws) return 200;
  rc = lms_verify_chain(&req, &out, ws, bytes, &exec);
  free(ws);
  if (rc != LMS_OK) return 300 + rc;
  if (accepted != 1 || tokens[0] != 3 || tokens[1] != 3 || status != LMS_ROW_OK) return 400;
  return 0;
}

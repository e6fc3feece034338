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

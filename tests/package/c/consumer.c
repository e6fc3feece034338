/* A C program built against an installed lmsample (CMake package or pkg-config): samples two
 * small rows on the CPU, greedily and with top-k, and checks the tokens and statuses. */
#include <lmsample/lmsample.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"x.y.z\""
#endif

int main(void) {
  const float logits[10] = {0.f, 1.f, 2.f, 5.f, 4.f, 9.f, 1.f, 2.f, 3.f, 4.f};
  const float temperature[2] = {0.f, 1.f};
  const int32_t top_k[2] = {0, 1}; /* top-1 sampling is greedy too */
  const uint64_t seed[2] = {7, 8};
  int32_t tokens[2] = {-7, -7};
  int32_t status[2] = {-7, -7};
  lms_request req;
  lms_outputs out;
  lms_exec exec;
  size_t bytes = 0;
  void* ws;
  int rc;
  if (strcmp(lms_version(), EXPECTED_VERSION) != 0) {
    fprintf(stderr, "lms_version() = %s, expected %s\n", lms_version(), EXPECTED_VERSION);
    return 1;
  }
  if (!lms_backend_available(LMS_BACKEND_CPU)) return 2;
  lms_request_init(&req);
  lms_outputs_init(&out);
  lms_exec_init(&exec);
  if (exec.backend != LMS_BACKEND_CPU) return 3;
  req.logits = logits;
  req.dtype = LMS_DTYPE_F32;
  req.batch = 2;
  req.vocab = 5;
  req.temperature = temperature;
  req.top_k = top_k;
  req.seed = seed;
  out.tokens = tokens;
  out.status = status;
  rc = lms_workspace_size(&req, &exec, &bytes);
  if (rc != LMS_OK) return 10 + rc;
  ws = malloc(bytes + 1);
  if (!ws) return 20;
  rc = lms_sample(&req, &out, ws, bytes, &exec);
  free(ws);
  if (rc != LMS_OK) {
    fprintf(stderr, "lms_sample: %d %s\n", rc, lms_last_error());
    return 30;
  }
  if (status[0] != LMS_ROW_OK || status[1] != LMS_ROW_OK) {
    fprintf(stderr, "status %s %s\n", lms_row_status_name(status[0]),
            lms_row_status_name(status[1]));
    return 40;
  }
  if (tokens[0] != 3 || tokens[1] != 0) {
    fprintf(stderr, "tokens %d %d, expected 3 0\n", tokens[0], tokens[1]);
    return 50;
  }
  printf("c consumer ok: lmsample %s, tokens %d %d\n", lms_version(), tokens[0], tokens[1]);
  return 0;
}

/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Running independent spans of one tensor on threads (block rows split at entry points). */
#include <stdlib.h>

#include "cabac.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define NC_HAVE_THREADS 1
#endif

void nc_run_spans(void *(*run)(void *), void *items, size_t count, size_t item_size)
{
    char *const base = (char *)items;
    size_t k;
#if defined(NC_HAVE_THREADS)
    pthread_t *tid = (pthread_t *)calloc(count, sizeof(pthread_t));
    unsigned char *started = (unsigned char *)calloc(count, 1);
    if (tid != NULL && started != NULL) {
        for (k = 1; k < count; k++) {
            started[k] = pthread_create(&tid[k], NULL, run, base + k * item_size) == 0;
        }
    }
    if (count > 0) {
        run(base);
    }
    for (k = 1; k < count; k++) {
        if (started != NULL && started[k]) {
            pthread_join(tid[k], NULL);
        } else {
            run(base + k * item_size);
        }
    }
    free(tid);
    free(started);
#else
    for (k = 0; k < count; k++) {
        run(base + k * item_size);
    }
#endif
}

/* Calls the symgraph function exported by export_model.py from plain C.
 *
 * digits.h (written by f.export(..., name="predict")) declares
 *     int32_t predict_create(predict_ctx **ctx);
 *     int32_t predict_run(predict_ctx *ctx, const float *images, float *probs);   (0: success)
 *     void predict_destroy(predict_ctx *ctx);
 * at its specialised (fixed) shapes, with size macros: images is PREDICT_IMAGES_SIZE floats
 * (BATCH x 64), probs PREDICT_PROBS_SIZE floats (BATCH x 10), both C-contiguous.  A context
 * owns a copy of the trained weights (predict_get_w / predict_set_w) and its scratch memory,
 * so each thread can have its own.  The library needs only libc and libm.
 *
 * Usage: main images.f32   (BATCH*64 raw float32 values, as written by export_model.py)
 */
#include <stdio.h>
#include <stdlib.h>

#include "digits.h"

#define BATCH PREDICT_IMAGES_DIM0
#define FEATURES PREDICT_IMAGES_DIM1
#define CLASSES PREDICT_PROBS_DIM1

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s images.f32\n", argv[0]);
        return 2;
    }
    static float images[PREDICT_IMAGES_SIZE];
    static float probs[PREDICT_PROBS_SIZE];
    FILE *fh = fopen(argv[1], "rb");
    if (!fh || fread(images, sizeof(float), BATCH * FEATURES, fh) != BATCH * FEATURES) {
        fprintf(stderr, "cannot read %d floats from %s\n", BATCH * FEATURES, argv[1]);
        return 1;
    }
    fclose(fh);
    if (predict_abi_version() != PREDICT_ABI_VERSION) {
        fprintf(stderr, "digits.h does not match the library\n");
        return 1;
    }
    predict_ctx *ctx;
    int32_t status = predict_create(&ctx);
    if (status != PREDICT_OK) {  /* e.g. PREDICT_ERR_CPU on a CPU without AVX2 */
        fprintf(stderr, "predict_create: %s\n", predict_strerror(status));
        return 1;
    }
    status = predict_run(ctx, images, probs);
    if (status != PREDICT_OK) {
        fprintf(stderr, "predict_run: %s\n", predict_last_error(ctx));
        return 1;
    }
    for (int i = 0; i < BATCH; i++) {
        printf("probs");
        for (int j = 0; j < CLASSES; j++) printf(" %.7f", probs[i * CLASSES + j]);
        printf("\n");
    }
    predict_destroy(ctx);
    return 0;
}

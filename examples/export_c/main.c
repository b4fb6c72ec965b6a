/* Calls the symgraph function exported by export_model.py from plain C.
 *
 * digits.h (written by f.export) declares the compiled function
 *     int32_t predict(const float *images, float *out0);   (0: success)
 * at its specialised shapes: images is BATCH x 64 floats, out0 (the probabilities) BATCH x 10
 * floats, both C-contiguous.  The trained weights live inside the library (shared variables,
 * with predict_get_w / predict_set_w accessors).
 *
 * Usage: main images.f32   (BATCH*64 raw float32 values, as written by export_model.py)
 */
#include <stdio.h>
#include <stdlib.h>

#include "digits.h"

#define BATCH 8
#define FEATURES 64
#define CLASSES 10

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s images.f32\n", argv[0]);
        return 2;
    }
    static float images[BATCH * FEATURES];
    static float probs[BATCH * CLASSES];
    FILE *fh = fopen(argv[1], "rb");
    if (!fh || fread(images, sizeof(float), BATCH * FEATURES, fh) != BATCH * FEATURES) {
        fprintf(stderr, "cannot read %d floats from %s\n", BATCH * FEATURES, argv[1]);
        return 1;
    }
    fclose(fh);
    predict_set_num_threads(1);
    predict(images, probs);
    for (int i = 0; i < BATCH; i++) {
        printf("probs");
        for (int j = 0; j < CLASSES; j++) printf(" %.7f", probs[i * CLASSES + j]);
        printf("\n");
    }
    return 0;
}

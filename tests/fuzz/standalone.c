/*
 * standalone.c - runs the API fuzzer without libFuzzer, so `make check`
 * exercises it with any compiler: N pseudo-random inputs from a seed, or
 * the files named on the command line (libFuzzer's crash and corpus files).
 *
 *   fuzz_api [N [SEED]]     defaults: env CTX_FUZZ_INPUTS / CTX_FUZZ_SEED,
 *                           else 20000 inputs from seed 1
 *   fuzz_api FILE...        replays each file once
 *
 * Built only with -DCTX_FUZZ_STANDALONE: libFuzzer brings its own main().
 */
#include "config.h"

#include "fuzz_api.h"

#include <ctype.h>
#include <string.h>

#ifdef CTX_FUZZ_STANDALONE

#define MAX_INPUT 600

/* xorshift64*: inputs must be reproducible from the seed alone. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static unsigned long long number(const char *arg, const char *env,
                                 unsigned long long dflt)
{
    const char *s = arg != NULL ? arg : getenv(env);
    if (s == NULL || *s == '\0')
        return dflt;
    return strtoull(s, NULL, 0);
}

static int replay(int argc, char **argv)
{
    static uint8_t buf[1 << 20];
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("fuzz: %d files replayed, %llu calls checked\n", argc - 1,
           fuzz_calls_checked());
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !isdigit((unsigned char)argv[1][0]))
        return replay(argc, argv);
    unsigned long long n = number(argc > 1 ? argv[1] : NULL,
                                  "CTX_FUZZ_INPUTS", 20000);
    unsigned long long seed = number(argc > 2 ? argv[2] : NULL,
                                     "CTX_FUZZ_SEED", 1);
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1; /* never 0 */
    static uint8_t buf[MAX_INPUT];
    for (unsigned long long i = 0; i < n; i++) {
        size_t len = 1 + rng_next() % MAX_INPUT;
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)(rng_next() >> 56);
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("fuzz: %llu inputs, %llu calls checked (seed %llu)\n", n,
           fuzz_calls_checked(), seed);
    return 0;
}

#endif

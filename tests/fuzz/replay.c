/*
 * replay.c - main() for a fuzz target built without libFuzzer: runs
 * LLVMFuzzerTestOneInput once over every file of its seed corpus, so
 * that the corpus (and every crash reproducer added to it) is a
 * regression test in each `make check`.
 *
 *   fuzz_NAME [FILE-OR-DIRECTORY...]
 *
 * Without arguments it replays $top_srcdir/tests/fuzz/corpus/NAME (NAME
 * is compiled in as FUZZ_NAME).  A broken promise in the target aborts,
 * which fails the test; an empty corpus fails too, since a replay of
 * nothing proves nothing.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FUZZ_NAME
# error "FUZZ_NAME must name the corpus directory"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as in libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;
    int rc = -1;

    if (f == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0)
        goto out;
    /* An exact-size copy, so that AddressSanitizer sees any over-read. */
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n)
        goto out;
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    rc = 0;
out:
    if (rc < 0)
        fprintf(stderr, "replay: %s: cannot read it\n", path);
    free(buf);
    fclose(f);
    return rc;
}

/* Runs path (a file, or every regular file of a directory, in name
 * order); returns the number of inputs run, or -1. */
static long run_path(const char *path)
{
    struct dirent **names;
    struct stat st;
    long count = 0;
    int n, i;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path) == 0 ? 1 : -1;
    n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (i = 0; i < n; i++) {
        char file[4096];

        snprintf(file, sizeof(file), "%s/%s", path, names[i]->d_name);
        if (count >= 0 && names[i]->d_name[0] != '.' &&
            stat(file, &st) == 0 && S_ISREG(st.st_mode))
            count = run_file(file) == 0 ? count + 1 : -1;
        free(names[i]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv)
{
    char def[4096];
    const char *top = getenv("top_srcdir");
    long total = 0;
    int i;

    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
        snprintf(def, sizeof(def), "%s/tests/fuzz/corpus/%s",
                 top != NULL ? top : ".", FUZZ_NAME);
        total = run_path(def);
    }
    for (i = 1; i < argc && total >= 0; i++) {
        long n = run_path(argv[i]);

        total = n < 0 ? -1 : total + n;
    }
    if (total <= 0) {
        fprintf(stderr, "replay (%s): %s\n", FUZZ_NAME,
                total < 0 ? "failed" : "no inputs found");
        return 1;
    }
    printf("replay (%s): %ld inputs, no broken promise\n", FUZZ_NAME,
           total);
    return 0;
}

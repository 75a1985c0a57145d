/* Writes each line of stdin as a record file in DIR with tlsrpt_record_write, the
 * helper an MTA built on the examples calls once per session (examples-c/common.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: write-records DIR <lines\n");
        return 64;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n')
            line[n - 1] = '\0';
        if (tlsrpt_record_write(argv[1], line) != 0) {
            fprintf(stderr, "write-records: %s: %s\n", argv[1], strerror(errno));
            return 1;
        }
    }
    free(line);
    return 0;
}

/* hctl.h - heapctl's parts: the command line (heapctl.c), getting a reply
 * from the daemon or a database file (heapctl.c) and printing it (render.c). */
#ifndef HCTL_H
#define HCTL_H

#include <cjson/cJSON.h>
#include <stdio.h>

/* Prints the result of command cmd as an aligned table on out. */
void hctl_render(FILE *out, const char *cmd, const cJSON *result);

#endif

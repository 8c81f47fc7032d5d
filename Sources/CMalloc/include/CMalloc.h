// glibc's allocator tuning (mallopt), for Runtime/ProcessTuning.swift, and the one setting that
// must be made before the process starts any thread (malloc_start.c).
#ifndef CSPTRAIN_CMALLOC_H
#define CSPTRAIN_CMALLOC_H
#if defined(__linux__)
#include <malloc.h>
#endif

/// The number of malloc arenas this process was started with (1: set when the program loaded,
/// before any thread existed).
int csptrain_malloc_arenas_at_start(void);
#endif

// glibc's allocator tuning (mallopt), for Runtime/ProcessTuning.swift.
#include <malloc.h>

// libsndfile: reading WAV, FLAC and the other formats it knows (Debian's libsndfile1-dev).
#ifndef CSPTRAIN_CSNDFILE_SHIM_H
#define CSPTRAIN_CSNDFILE_SHIM_H
#include <sndfile.h>
#endif

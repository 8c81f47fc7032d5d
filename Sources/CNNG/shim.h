// The nng C API as csptrain uses it: the core, the protocols of its design, the TLS
// configuration of the tls+tcp:// transport (Debian's libnng links mbedTLS 2.28: TLS 1.2) and
// the HTTP server (the coordinator's /metrics and live page).
// Debian's libnng-dev ships no pkg-config file, so the module map links "nng" directly.
#ifndef CSPTRAIN_CNNG_SHIM_H
#define CSPTRAIN_CNNG_SHIM_H
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/tls/tls.h>
#endif

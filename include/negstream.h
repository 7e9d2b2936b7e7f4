/*
 * negstream.h - the public API of libnegstream.
 *
 * libnegstream gives a C program what .NET's
 * System.Net.Security.NegotiateStream gives a .NET program: a stream over
 * a connected socket that authenticates both ends with GSSAPI (Kerberos,
 * NTLM, SPNEGO "Negotiate") and then signs and/or encrypts every byte, in
 * the [MS-NNS] wire format, with .NET's BeginWrite/EndWrite asynchronous
 * model run on a pthread worker pool.
 *
 * Every function is documented in man/man3; negstream(7) is the overview.
 *
 * Ownership, once for all:
 *  - borrowed: a buffer handed to negstream_begin_write/_read stays the
 *    caller's and must stay alive and unchanged until the operation has
 *    completed (the library does not copy it);
 *  - owned by the object: negstream_remote_identity() lives as long as the
 *    stream, negstream_async_fd() as long as the async result;
 *  - released by a call: every negstream_async * is ended exactly once by
 *    the matching negstream_end_*(), which frees it.
 *
 * Errors: every function that can fail takes 'negstream_error *err' last
 * (it may be NULL), returns NULL / -1 / false on failure with 'err'
 * filled, and leaves err->code == NEGSTREAM_OK on success.
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#ifndef NEGSTREAM_H
#define NEGSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
# define NEGSTREAM_API __attribute__((visibility("default")))
#else
# define NEGSTREAM_API
#endif

#define NEGSTREAM_VERSION_MAJOR 0
#define NEGSTREAM_VERSION_MINOR 1
#define NEGSTREAM_VERSION_PATCH 0

/* Largest plaintext chunk carried by one data frame (63 * 1024). */
#define NEGSTREAM_MAX_FRAME_PLAINTEXT 64512

typedef struct negstream       negstream;        /* a NegotiateStream      */
typedef struct negstream_async negstream_async;  /* IAsyncResult of one op */
typedef struct negstream_pool  negstream_pool;   /* worker pool            */

/* AsyncCallback: runs on a worker thread of the stream's pool, once. */
typedef void (*negstream_callback)(negstream_async *ar);

typedef enum {
    NEGSTREAM_PROTECTION_NONE = 0,            /* ProtectionLevel.None        */
    NEGSTREAM_PROTECTION_SIGN = 1,            /* ProtectionLevel.Sign        */
    NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN = 2 /* EncryptAndSign, the default */
} negstream_protection;

typedef enum {
    NEGSTREAM_IMPERSONATION_NONE = 0,
    NEGSTREAM_IMPERSONATION_ANONYMOUS = 1,
    NEGSTREAM_IMPERSONATION_IDENTIFICATION = 2,   /* the default, as in .NET */
    NEGSTREAM_IMPERSONATION_IMPERSONATION = 3,
    NEGSTREAM_IMPERSONATION_DELEGATION = 4
} negstream_impersonation;

typedef enum {                    /* the .NET exception each stands for     */
    NEGSTREAM_OK = 0,
    NEGSTREAM_E_ARGUMENT_NULL,     /* ArgumentNullException                  */
    NEGSTREAM_E_ARGUMENT_RANGE,    /* ArgumentOutOfRangeException            */
    NEGSTREAM_E_ARGUMENT,          /* ArgumentException                      */
    NEGSTREAM_E_INVALID_OPERATION, /* InvalidOperationException              */
    NEGSTREAM_E_NOT_SUPPORTED,     /* NotSupportedException                  */
    NEGSTREAM_E_DISPOSED,          /* ObjectDisposedException                */
    NEGSTREAM_E_IO,                /* IOException                            */
    NEGSTREAM_E_AUTHENTICATION,    /* AuthenticationException                */
    NEGSTREAM_E_INVALID_CREDENTIAL,/* InvalidCredentialException             */
    NEGSTREAM_E_TIMEOUT,           /* a wait or an I/O timeout expired       */
    NEGSTREAM_E_CANCELED,          /* cancelled before it ran                */
    NEGSTREAM_E_NOMEM              /* out of memory                          */
} negstream_status;

typedef struct negstream_error {
    negstream_status code;
    int      sys_errno;            /* errno of the failing system call, or 0 */
    uint32_t gss_major, gss_minor; /* GSSAPI status of the failing call, or 0 */
    char     message[256];         /* one line for a human                   */
} negstream_error;

NEGSTREAM_API const char *negstream_status_name(negstream_status code);
NEGSTREAM_API const char *negstream_version(void);   /* "0.1.0" */

/* ---- streams ---------------------------------------------------------- */

NEGSTREAM_API negstream *negstream_new(int fd, bool leave_inner_open,
                                       negstream_error *err);
NEGSTREAM_API void negstream_close(negstream *s);

/* ---- custom transports (negstream_new_io(3)) --------------------------- */

/*
 * A stream over a transport of the application's (a TLS connection, a
 * pair of pipes, memory): the library calls these functions instead of
 * recv and send.  Every call must return at once, never wait; "would
 * block" is -1 with errno EAGAIN (or EWOULDBLOCK), to go on when read_fd
 * is readable (read) or write_fd writable (write), or one of the two
 * values below, which name the readiness needed whatever the call (a TLS
 * read may need to write: OpenSSL's SSL_ERROR_WANT_READ/_WANT_WRITE).
 * read returns 1..len bytes or 0 at the end of the stream; write 1..len
 * bytes; -1 with any other errno is an I/O error (EINTR is retried).
 * A write that said "would block" is made again with the same bytes and
 * length (as SSL_write requires), unless the stream fails or closes.
 * Any other return (more than len, 0 from write, an unknown negative
 * value) fails the operation with NEGSTREAM_E_IO and a message.
 *
 * The library polls duplicates of read_fd and write_fd (the numbers stay
 * the application's) and never reads or writes them itself.  Unless
 * flags has NEGSTREAM_IO_CONCURRENT, it never runs two of read, write and
 * shutdown at once on one stream; it holds no other lock of its own
 * around any of them, so they may take the application's locks, but must
 * not call libnegstream on the same stream.  SIGPIPE is blocked in the
 * calling thread around each call and one the call raised is consumed.
 *
 * negstream_close() calls shutdown (if not NULL) once, then close is
 * called exactly once when no step can run any more (in negstream_close
 * or on the thread whose step ends last); nothing after close.  If
 * negstream_new_io() fails, no function of the table is ever called and
 * ctx stays the caller's.  See negstream_new_io(3).
 *
 * The structure grows as the option structures do: negstream_io_init()
 * first (it stamps struct_version), then the fields.  It is copied by
 * negstream_new_io().  read, write and close are required.
 */
#define NEGSTREAM_IO_WANT_READ  (-2)   /* wait until read_fd is readable  */
#define NEGSTREAM_IO_WANT_WRITE (-3)   /* wait until write_fd is writable */

/* flags */
#define NEGSTREAM_IO_CONCURRENT 0x1u   /* read, write and shutdown may run
                                          at the same time (else the
                                          library never overlaps them)    */

#define NEGSTREAM_IO_VERSION 1

typedef struct negstream_io {
    uint32_t struct_version;   /* set by _init; every later field follows */
    uint32_t flags;            /* NEGSTREAM_IO_*; 0 by default             */
    int read_fd;               /* pollable: readable when a read may go on */
    int write_fd;              /* pollable: writable when a write may go
                                  on; -1 (the default): read_fd            */
    ssize_t (*read)(void *ctx, void *buf, size_t len);
    ssize_t (*write)(void *ctx, const void *buf, size_t len);
    /* negstream_close() was called: end the connection (TLS close_notify,
     * shutdown(2)), as closing .NET's inner stream does; NULL leaves it
     * open (leave_inner_open).  Once, and never after close. */
    void (*shutdown)(void *ctx);
    /* No call will be made any more: release ctx.  Exactly once. */
    void (*close)(void *ctx);
} negstream_io;

NEGSTREAM_API void negstream_io_init_version(negstream_io *io,
                                             unsigned version);

/* Fill *io with the defaults and stamp this header's version. */
static inline void negstream_io_init(negstream_io *io)
{
    negstream_io_init_version(io, NEGSTREAM_IO_VERSION);
}

NEGSTREAM_API negstream *negstream_new_io(const negstream_io *io, void *ctx,
                                          negstream_error *err);

/* Timeouts in milliseconds for every later read / write (.NET ReadTimeout
 * / WriteTimeout), each bounding a whole operation from its start; -1 (the
 * default) waits forever.  An expired timeout fails the operation with
 * NEGSTREAM_E_TIMEOUT and, because a frame may be half sent or half read,
 * faults the stream. */
NEGSTREAM_API int negstream_set_timeouts(negstream *s, int read_timeout_ms,
                                         int write_timeout_ms,
                                         negstream_error *err);
/* The deadline of a whole authentication, from its start (default 60000
 * ms; -1: none).  Expiry fails it with NEGSTREAM_E_TIMEOUT. */
NEGSTREAM_API int negstream_set_auth_timeout(negstream *s, int timeout_ms,
                                             negstream_error *err);

/* ---- authentication --------------------------------------------------- */

/*
 * The option structures grow by appending fields, and a program built
 * against an older negstream.h must keep working with a newer library.
 * So each structure carries a version stamp, 'struct_version', written by
 * its _init function (never by hand): call negstream_client_options_init()
 * or negstream_server_options_init() first, then set the fields.  The
 * library reads only the fields of the version stamped, and refuses a
 * structure without a valid stamp with NEGSTREAM_E_ARGUMENT.
 *
 * The _init functions are inline: they pass the version this header
 * describes to the exported negstream_*_options_init_version() (which is
 * what a binding without C's inline functions calls).
 *
 * The rule for a new field: it goes after the last one, never before
 * 'struct_version' (whose offset is fixed for ever); the version constant
 * below goes up by one; and src/options.c gets the size of the new
 * version (its build fails until it does).
 */
#define NEGSTREAM_CLIENT_OPTIONS_VERSION 2
#define NEGSTREAM_SERVER_OPTIONS_VERSION 2

typedef struct negstream_client_options {
    const char *target_name;   /* "host/server.example.com" or "host@server",
                                  or a principal name "svc/h@REALM"        */
    const char *user, *domain, *password;  /* user NULL: default creds     */
    negstream_protection    protection;    /* required; ENCRYPT_AND_SIGN   */
    negstream_impersonation impersonation; /* allowed;  IDENTIFICATION     */
    const char *mechanism;     /* "negotiate" (default), "kerberos", "ntlm" */
    /* -- appended fields -- */
    bool require_mutual_auth;  /* fail unless mutual auth was granted      */
    uint32_t struct_version;   /* set by _init; every later field follows */
    /* -- version 2: Extended Protection and delegation -- */
    const void *channel_binding;   /* bytes binding the authentication to
                                      the channel below, e.g. from
                                      negstream_channel_binding_from_ssl();
                                      NULL (and len 0): none               */
    size_t channel_binding_len;
    const char *ccache_name;   /* credentials from this Kerberos ccache
                                  ("FILE:/path"); NULL: the default        */
} negstream_client_options;

/* What a server does with the client's channel bindings (.NET's
 * PolicyEnforcement of an ExtendedProtectionPolicy). */
typedef enum {
    NEGSTREAM_EXTENDED_PROTECTION_NEVER = 0,          /* ignore them       */
    NEGSTREAM_EXTENDED_PROTECTION_WHEN_SUPPORTED = 1, /* check them if sent */
    NEGSTREAM_EXTENDED_PROTECTION_ALWAYS = 2          /* require them       */
} negstream_extended_protection;

typedef struct negstream_server_options {
    const char *service_name;  /* acceptor principal; NULL: any in keytab  */
    negstream_protection    protection;    /* required; ENCRYPT_AND_SIGN   */
    negstream_impersonation impersonation; /* required; IDENTIFICATION     */
    const char *mechanism;     /* as above                                 */
    /* -- appended fields -- */
    uint32_t struct_version;   /* set by _init; every later field follows */
    /* -- version 2: Extended Protection -- */
    negstream_extended_protection extended_protection;  /* NEVER          */
    const void *channel_binding;   /* the bindings of this server's channel,
                                      required unless NEVER                */
    size_t channel_binding_len;
} negstream_server_options;

NEGSTREAM_API void negstream_client_options_init_version(
        negstream_client_options *o, unsigned version);
NEGSTREAM_API void negstream_server_options_init_version(
        negstream_server_options *o, unsigned version);

/* Fill *o with the defaults and stamp this header's version. */
static inline void negstream_client_options_init(negstream_client_options *o)
{
    negstream_client_options_init_version(o,
                                          NEGSTREAM_CLIENT_OPTIONS_VERSION);
}

static inline void negstream_server_options_init(negstream_server_options *o)
{
    negstream_server_options_init_version(o,
                                          NEGSTREAM_SERVER_OPTIONS_VERSION);
}

NEGSTREAM_API int negstream_authenticate_as_client(negstream *s,
        const negstream_client_options *o, negstream_error *err);
NEGSTREAM_API int negstream_authenticate_as_server(negstream *s,
        const negstream_server_options *o, negstream_error *err);
NEGSTREAM_API negstream_async *negstream_begin_authenticate_as_client(
        negstream *s, const negstream_client_options *o,
        negstream_callback cb, void *state, negstream_error *err);
NEGSTREAM_API int negstream_end_authenticate_as_client(negstream *s,
        negstream_async *ar, negstream_error *err);
NEGSTREAM_API negstream_async *negstream_begin_authenticate_as_server(
        negstream *s, const negstream_server_options *o,
        negstream_callback cb, void *state, negstream_error *err);
NEGSTREAM_API int negstream_end_authenticate_as_server(negstream *s,
        negstream_async *ar, negstream_error *err);

/* ---- reading and writing ---------------------------------------------- */

NEGSTREAM_API ssize_t negstream_write(negstream *s, const void *buffer,
        size_t buffer_len, ssize_t offset, ssize_t count,
        negstream_error *err);
NEGSTREAM_API ssize_t negstream_read(negstream *s, void *buffer,
        size_t buffer_len, ssize_t offset, ssize_t count,
        negstream_error *err);

NEGSTREAM_API negstream_async *negstream_begin_write(negstream *s,
        const void *buffer, size_t buffer_len, ssize_t offset, ssize_t count,
        negstream_callback cb, void *state, negstream_error *err);
NEGSTREAM_API int negstream_end_write(negstream *s, negstream_async *ar,
        negstream_error *err);
NEGSTREAM_API negstream_async *negstream_begin_read(negstream *s,
        void *buffer, size_t buffer_len, ssize_t offset, ssize_t count,
        negstream_callback cb, void *state, negstream_error *err);
NEGSTREAM_API ssize_t negstream_end_read(negstream *s, negstream_async *ar,
        negstream_error *err);

/* ---- stdio (negstream_fopen(3)) ---------------------------------------- */

/* A FILE * over an authenticated stream, mode "r", "w" or "r+": fully
 * buffered in 64512 bytes, so that a full buffer or an fflush is one
 * frame; fclose flushes and leaves the stream open.  NULL with errno set
 * on failure (as fdopen).  Failures of the FILE set errno (the table is
 * in the page) and ferror(f); negstream_ferror copies the last one's
 * negstream_error and returns 1, returns 0 if none, -1 if f is not an
 * open FILE of negstream_fopen. */
NEGSTREAM_API FILE *negstream_fopen(negstream *s, const char *mode);
NEGSTREAM_API int negstream_ferror(FILE *f, negstream_error *err);

/* ---- async results (IAsyncResult) ------------------------------------- */

NEGSTREAM_API bool negstream_async_is_completed(const negstream_async *ar);
NEGSTREAM_API bool negstream_async_completed_synchronously(
        const negstream_async *ar);
NEGSTREAM_API void *negstream_async_state(const negstream_async *ar);
NEGSTREAM_API bool negstream_async_wait(negstream_async *ar, int timeout_ms);
NEGSTREAM_API int negstream_async_fd(negstream_async *ar);
NEGSTREAM_API ssize_t negstream_async_wait_any(negstream_async *const *ars,
        size_t n, int timeout_ms);
NEGSTREAM_API bool negstream_async_wait_all(negstream_async *const *ars,
        size_t n, int timeout_ms);
NEGSTREAM_API int negstream_async_cancel(negstream_async *ar);

/* ---- properties (valid after authentication) -------------------------- */

NEGSTREAM_API bool negstream_is_authenticated(const negstream *s);
NEGSTREAM_API bool negstream_is_encrypted(const negstream *s);
NEGSTREAM_API bool negstream_is_signed(const negstream *s);
NEGSTREAM_API bool negstream_is_mutually_authenticated(const negstream *s);
NEGSTREAM_API bool negstream_is_server(const negstream *s);
NEGSTREAM_API negstream_impersonation negstream_impersonation_level(
        const negstream *s);
NEGSTREAM_API const char *negstream_remote_identity(const negstream *s);
NEGSTREAM_API const char *negstream_authentication_type(const negstream *s);
/* Server: true when the client's channel bindings were checked and matched
 * (GSS_C_CHANNEL_BOUND_FLAG).  A client never learns it: always false. */
NEGSTREAM_API bool negstream_is_channel_bound(const negstream *s);

/* ---- delegation -------------------------------------------------------- */

/* Server: stores the credentials the client delegated (impersonation level
 * DELEGATION) in the Kerberos ccache ccache_name ("FILE:/path",
 * "MEMORY:name", ...), replacing what it held, so that the server can act
 * as the client towards another service (client option ccache_name). */
NEGSTREAM_API int negstream_store_delegated_credentials(negstream *s,
        const char *ccache_name, negstream_error *err);

/* ---- channel binding data (RFC 5929, OpenSSL) -------------------------- */

/* Room for the largest binding the helpers below produce:
 * "tls-server-end-point:" followed by a hash of up to 64 bytes. */
#define NEGSTREAM_CHANNEL_BINDING_MAX 128

/* The tls-server-end-point channel binding of a server certificate (DER):
 * "tls-server-end-point:" + its hash (RFC 5929 4.1: the hash of its
 * signature algorithm, SHA-256 instead of MD5 or SHA-1), the bytes .NET
 * puts after the SEC_CHANNEL_BINDINGS header for
 * ChannelBindingKind.Endpoint.  *out_len: the size of out on entry, the
 * length of the binding on return.  NEGSTREAM_E_NOT_SUPPORTED in a build
 * without OpenSSL. */
NEGSTREAM_API int negstream_channel_binding_from_cert(
        const unsigned char *der, size_t der_len, unsigned char *out,
        size_t *out_len, negstream_error *err);

/* The same for the server certificate of an OpenSSL TLS connection
 * (an SSL *, handshake done): the peer's on a client, its own on a
 * server. */
struct ssl_st;
NEGSTREAM_API int negstream_channel_binding_from_ssl(const struct ssl_st *ssl,
        unsigned char *out, size_t *out_len, negstream_error *err);

/* ---- worker pools ----------------------------------------------------- */

NEGSTREAM_API negstream_pool *negstream_pool_new(unsigned min_threads,
        unsigned max_threads, negstream_error *err);
NEGSTREAM_API void negstream_pool_free(negstream_pool *p);
NEGSTREAM_API int negstream_set_pool(negstream *s, negstream_pool *p,
                                     negstream_error *err);

#ifdef __cplusplus
}
#endif

#endif /* NEGSTREAM_H */

/*
 * options.c - the option structures and the transport table
 * (negstream_io): defaults, version stamps, and reading a caller's
 * structure of an older (smaller) version.
 *
 * negstream.h says the rule: fields are only appended, after
 * 'struct_version', and each new version adds its size to the tables
 * below.  A caller's structure is only ever read up to the size of the
 * version it was stamped with, so a program built against an older
 * header, whose structure ends earlier, is never read past its end.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "options.h"

/* The stamp: "NS" and the version, so that a structure nobody stamped
 * (stack garbage, or zeros) is told apart from a small version number. */
#define STAMP_MAGIC 0x4e530000u
#define STAMP_MASK  0xffff0000u
#define STAMP(v)    (STAMP_MAGIC | ((uint32_t)(v) & 0xffffu))

/* Bytes of the structure up to the end of 'field'. */
#define END_OF(type, field) \
    (offsetof(type, field) + sizeof(((type *)0)->field))

/* Compile-time check (C99 has no _Static_assert). */
#define CHECK(name, cond) typedef char name[(cond) ? 1 : -1]

/* Size of each version, indexed by version (0 is none). */
static const size_t client_sizes[] = {
    0,
    END_OF(negstream_client_options, struct_version),  /* 1 */
    END_OF(negstream_client_options, ccache_name),     /* 2 */
};

static const size_t server_sizes[] = {
    0,
    END_OF(negstream_server_options, struct_version),  /* 1 */
    END_OF(negstream_server_options, channel_binding_len),  /* 2 */
};

static const size_t io_sizes[] = {
    0,
    END_OF(negstream_io, close),                        /* 1 */
};

/* One size per version up to the header's: a version constant raised
 * without its size here fails the build.  That the last size covers every
 * field is checked by tests/check_frame.c (options_sizes). */
CHECK(client_sizes_complete,
      sizeof(client_sizes) / sizeof(client_sizes[0]) ==
      NEGSTREAM_CLIENT_OPTIONS_VERSION + 1);
CHECK(server_sizes_complete,
      sizeof(server_sizes) / sizeof(server_sizes[0]) ==
      NEGSTREAM_SERVER_OPTIONS_VERSION + 1);
CHECK(io_sizes_complete,
      sizeof(io_sizes) / sizeof(io_sizes[0]) == NEGSTREAM_IO_VERSION + 1);
/* The transport table has its stamp first, where every version has it. */
CHECK(io_stamp_first, offsetof(negstream_io, struct_version) == 0);

size_t negstream__client_options_size(unsigned version)
{
    return version <= NEGSTREAM_CLIENT_OPTIONS_VERSION ?
           client_sizes[version] : 0;
}

size_t negstream__server_options_size(unsigned version)
{
    return version <= NEGSTREAM_SERVER_OPTIONS_VERSION ?
           server_sizes[version] : 0;
}

size_t negstream__io_size(unsigned version)
{
    return version <= NEGSTREAM_IO_VERSION ? io_sizes[version] : 0;
}

static void client_defaults(negstream_client_options *o)
{
    memset(o, 0, sizeof(*o));
    o->protection = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    o->impersonation = NEGSTREAM_IMPERSONATION_IDENTIFICATION;
    o->mechanism = "negotiate";
    o->require_mutual_auth = false;
    o->struct_version = STAMP(NEGSTREAM_CLIENT_OPTIONS_VERSION);
    o->channel_binding = NULL;
    o->channel_binding_len = 0;
    o->ccache_name = NULL;
}

static void server_defaults(negstream_server_options *o)
{
    memset(o, 0, sizeof(*o));
    o->protection = NEGSTREAM_PROTECTION_ENCRYPT_AND_SIGN;
    o->impersonation = NEGSTREAM_IMPERSONATION_IDENTIFICATION;
    o->mechanism = "negotiate";
    o->struct_version = STAMP(NEGSTREAM_SERVER_OPTIONS_VERSION);
    o->extended_protection = NEGSTREAM_EXTENDED_PROTECTION_NEVER;
    o->channel_binding = NULL;
    o->channel_binding_len = 0;
}

static void io_defaults(negstream_io *io)
{
    memset(io, 0, sizeof(*io));
    io->struct_version = STAMP(NEGSTREAM_IO_VERSION);
    io->flags = 0;
    io->read_fd = -1;
    io->write_fd = -1;
    io->read = NULL;
    io->write = NULL;
    io->shutdown = NULL;
    io->close = NULL;
}

/* The stamp _init writes for 'version' (0: unset; a version too large
 * for the stamp counts as the largest, unknown to every library). */
static uint32_t init_stamp(unsigned version)
{
    if (version == 0)
        return 0;
    return STAMP(version > 0xffffu ? 0xffffu : version);
}

/* Bytes of the caller's structure _init may write: its size when this
 * library knows its version; all this library knows of a newer (larger)
 * one; the first version's for 0. */
static size_t init_size(const size_t *sizes, unsigned known,
                        unsigned version)
{
    if (version == 0)
        return sizes[1];
    return sizes[version <= known ? version : known];
}

/*
 * Writes the defaults of the fields 'version' has, and only those bytes:
 * the caller's structure is that big.  A version this library does not
 * know is stamped as given (and refused when the options are used);
 * version 0 is stamped as unset.
 */
NEGSTREAM_API void negstream_client_options_init_version(
        negstream_client_options *o, unsigned version)
{
    negstream_client_options d;

    if (o == NULL)
        return;
    client_defaults(&d);
    d.struct_version = init_stamp(version);
    memcpy(o, &d, init_size(client_sizes, NEGSTREAM_CLIENT_OPTIONS_VERSION,
                            version));
}

NEGSTREAM_API void negstream_server_options_init_version(
        negstream_server_options *o, unsigned version)
{
    negstream_server_options d;

    if (o == NULL)
        return;
    server_defaults(&d);
    d.struct_version = init_stamp(version);
    memcpy(o, &d, init_size(server_sizes, NEGSTREAM_SERVER_OPTIONS_VERSION,
                            version));
}

NEGSTREAM_API void negstream_io_init_version(negstream_io *io,
                                             unsigned version)
{
    negstream_io d;

    if (io == NULL)
        return;
    io_defaults(&d);
    d.struct_version = init_stamp(version);
    memcpy(io, &d, init_size(io_sizes, NEGSTREAM_IO_VERSION, version));
}

/* The version a stamp names, after checking it; 0 with err set when it
 * is not one this library can read. */
static unsigned stamped_version(uint32_t stamp, unsigned known,
                                const char *what, const char *init,
                                negstream_error *err)
{
    unsigned v = stamp & 0xffffu;

    if ((stamp & STAMP_MASK) != STAMP_MAGIC || v == 0) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "the %s were not initialized: call "
                           "%s() on them before setting their fields",
                           what, init);
        return 0;
    }
    if (v > known) {
        negstream__err_set(err, NEGSTREAM_E_ARGUMENT,
                           "the %s are of version %u, this "
                           "libnegstream (%s) knows version %u at most: the "
                           "program was built against a newer negstream.h",
                           what, v, negstream_version(), known);
        return 0;
    }
    return v;
}

int negstream__client_options_import(negstream_client_options *dst,
                                     const negstream_client_options *src,
                                     negstream_error *err)
{
    unsigned v = stamped_version(src->struct_version,
                                 NEGSTREAM_CLIENT_OPTIONS_VERSION,
                                 "client options",
                                 "negstream_client_options_init", err);

    if (v == 0)
        return -1;
    client_defaults(dst);
    memcpy(dst, src, client_sizes[v]);
    dst->struct_version = STAMP(NEGSTREAM_CLIENT_OPTIONS_VERSION);
    return 0;
}

int negstream__server_options_import(negstream_server_options *dst,
                                     const negstream_server_options *src,
                                     negstream_error *err)
{
    unsigned v = stamped_version(src->struct_version,
                                 NEGSTREAM_SERVER_OPTIONS_VERSION,
                                 "server options",
                                 "negstream_server_options_init", err);

    if (v == 0)
        return -1;
    server_defaults(dst);
    memcpy(dst, src, server_sizes[v]);
    dst->struct_version = STAMP(NEGSTREAM_SERVER_OPTIONS_VERSION);
    return 0;
}

int negstream__io_import(negstream_io *dst, const negstream_io *src,
                         negstream_error *err)
{
    unsigned v = stamped_version(src->struct_version, NEGSTREAM_IO_VERSION,
                                 "transport functions (negstream_io)",
                                 "negstream_io_init", err);

    if (v == 0)
        return -1;
    io_defaults(dst);
    memcpy(dst, src, io_sizes[v]);
    dst->struct_version = STAMP(NEGSTREAM_IO_VERSION);
    return 0;
}

/*
 * options.h - the option structures of the public header (and the
 * transport table, negstream_io, which grows the same way): their
 * defaults, the version stamp their _init functions write, and importing
 * a caller's structure of any version into one of this library's.
 *
 * Knows nothing but the structures: no GSSAPI, no streams.
 */
#ifndef NEGSTREAM_OPTIONS_H
#define NEGSTREAM_OPTIONS_H

#include <stddef.h>
#include "negstream.h"

/*
 * Copies the caller's options *src into *dst, a structure of this
 * library's version: the fields src's stamped version has are copied,
 * every later one gets its default.  A structure whose stamp is missing
 * (no _init call) or from a newer header than this library knows ->
 * -1 with NEGSTREAM_E_ARGUMENT; src is read no further than its stamp
 * then.
 */
int negstream__client_options_import(negstream_client_options *dst,
                                     const negstream_client_options *src,
                                     negstream_error *err);
int negstream__server_options_import(negstream_server_options *dst,
                                     const negstream_server_options *src,
                                     negstream_error *err);

/* The size of a structure of 'version' as src/options.c records it: the
 * bytes up to the end of its last field (0 for a version it does not
 * know).  For the tests. */
size_t negstream__client_options_size(unsigned version);
size_t negstream__server_options_size(unsigned version);

/* The transport table of negstream_new_io, likewise: the fields of the
 * stamped version copied, later ones defaulted; -1 with
 * NEGSTREAM_E_ARGUMENT when unstamped or newer than this library. */
int negstream__io_import(negstream_io *dst, const negstream_io *src,
                         negstream_error *err);
size_t negstream__io_size(unsigned version);

#endif

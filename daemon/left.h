/* left.h - the accounts clients leave beside the socket when they end
 * with no daemon to tell.
 *
 * A program whose daemon went away and did not come back before it
 * exited cannot send its END, nor the PREVIOUS records that count what it
 * wrote on the connections it lost. The client (libclient/transport.c)
 * leaves them instead in a file beside the socket, SOCKET.left.PID.TIME:
 * HELLO, PREVIOUS records and END, the frames a connection would have
 * carried. The daemon takes each such file when it starts, and every few
 * seconds after (one left as it started, or while it could not be
 * reached), as the session of a connection that said just that.
 *
 * Only regular files of the daemon's own user, at most HTD_LEFT_MAX bytes,
 * are taken. A NAME.tmp is one still being written, or one its writer
 * died writing: removed once a minute old. A file is removed once read,
 * before its frames are stored: a daemon killed in between loses that
 * account rather than count it twice. Its frames go through the same
 * decoders as a connection's.
 */
#ifndef HTD_LEFT_H
#define HTD_LEFT_H

#include <stddef.h>
#include <stdint.h>

#define HTD_LEFT_MAX (64u * 1024u) /* a client's account: HELLO, a few PREVIOUS, END */
#define HTD_LEFT_ABANDONED_S 60    /* a NAME.tmp this old: its writer died writing it */

/* Called with the bytes of one file (at path) taken. */
typedef void (*htd_left_fn)(const uint8_t *bytes, size_t len, const char *path, void *arg);

/* Takes every account left beside socket_path: reads it, removes it and
 * hands its bytes to fn; files that are not accounts this daemon may take
 * (another user's, not a regular file, too large) are left, and with say
 * logged (the daemon looks again every few seconds: it says so at start).
 * Returns how many were handed to fn. */
size_t htd_left_take(const char *socket_path, int say, htd_left_fn fn, void *arg);

#endif

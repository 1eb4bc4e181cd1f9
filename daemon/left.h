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
 * died writing: removed once a minute old. An account's frames go through
 * the same decoders as a connection's.
 *
 * Each account is stored once, even when the daemon is killed while it
 * stores one: a file read is renamed NAME.taking; its frames are queued
 * for the store as one transaction (htd_session_hold); the file is
 * removed once that transaction has committed. A NAME.taking found at a
 * start is one a killed daemon was storing: taken again unless the
 * database has its session (the account's pid and start, which are its
 * own), which it has whole or not at all.
 */
#ifndef HTD_LEFT_H
#define HTD_LEFT_H

#include <stddef.h>
#include <stdint.h>

#define HTD_LEFT_MAX (64u * 1024u) /* a client's account: HELLO, a few PREVIOUS, END */
#define HTD_LEFT_ABANDONED_S 60    /* a NAME.tmp this old: its writer died writing it */

#define HTD_LEFT_TAKING ".taking" /* the suffix of an account being stored */

/* Called with the bytes of one account taken, path its name (without the
 * suffix), again 1 when it is one a killed daemon was storing. The
 * callee calls htd_left_remove(path) once the account is stored, or
 * when it is none to store. */
typedef void (*htd_left_fn)(const uint8_t *bytes, size_t len, const char *path, int again,
                            void *arg);

/* Takes every account left beside socket_path: reads it, renames it
 * NAME.taking and hands its bytes to fn; files that are not accounts this
 * daemon may take (another user's, not a regular file, too large) are
 * left, and at_start logged (the daemon looks again every few seconds:
 * it says so at start). A NAME.taking is taken at_start only (otherwise
 * this daemon is storing it). Returns how many were handed to fn. */
size_t htd_left_take(const char *socket_path, int at_start, htd_left_fn fn, void *arg);

/* Removes the account taken from path (its NAME.taking). */
void htd_left_remove(const char *path);

#endif

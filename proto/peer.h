/* peer.h - the process at the other end of a Unix socket, for the client's
 * connect and the daemon's start-up: both must tell a daemon that serves
 * from one that was killed and is still exiting.
 *
 * A process killed with SIGKILL keeps its sockets until its last thread has
 * exited, and on a busy machine a thread at idle priority (the daemon's
 * ingest worker) took seconds to. Meanwhile its main thread is a zombie,
 * its listening socket still takes connections, and nothing reads them.
 */
#ifndef HT_PEER_H
#define HT_PEER_H

/* The pid of the process at fd's other end (SO_PEERCRED): for a connected
 * client socket, the process that listened. 0 when unknown (another pid
 * namespace). */
int ht_peer_pid(int fd);

/* 1 when process pid is exiting or gone: its main thread is a zombie, or
 * it has no /proc entry. 0 when it runs, or when /proc cannot tell (not
 * mounted, hidden). Neither allocates nor uses stdio. */
int ht_pid_exiting(int pid);

#endif /* HT_PEER_H */

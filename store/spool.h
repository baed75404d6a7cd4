/* The durable message queue: what the relay has answered 250 for and not yet delivered.
 *
 * Layout under STATE_DIR (every directory 0700, every file 0600):
 *   spool/.lock            held (flock) by the one process that owns the spool
 *   spool/tmp/             writes in progress; anything here after a crash was never committed
 *   spool/queue/ID.body    the message bytes, then a 42-byte trailer (below)
 *   spool/queue/ID.env     the envelope record (store/spool_envelope.h); its presence is the
 *                          commit point
 *   spool/corrupt/         files set aside by spool_scan because they might hold a message but
 *                          cannot be trusted (reported in the log; an operator looks at them)
 *
 * ID is the queue id: 16 lower-case hex digits from RAND_bytes, shown in logs as queue_id=.
 *
 * Body file: the message exactly as it is to be sent upstream before transparency (the relay
 * stores each line unstuffed with CRLF), then the trailer "SOP-END <16 hex id> <16 hex size>\n"
 * (42 bytes). The envelope holds the size and the body's SHA-256: spool_body_open checks the file
 * length and the trailer, spool_body_read checks the hash when it reaches the end.
 *
 * Discipline (Postfix mail_stream.c, OpenSMTPD queue_fs.c): every file is written under tmp/
 * (O_EXCL, 0600), fsynced, renamed into queue/, and queue/ is fsynced after each rename. The body
 * is renamed (and the directory fsynced) before the envelope, so a crash never leaves an envelope
 * without its body; spool_remove unlinks the envelope first for the same reason. State updates
 * replace the envelope by rename: a reader sees the old record or the new one, never a mix.
 * Delivery is at-least-once: a crash between the upstream's 250 and spool_remove sends the
 * message again. With fsync off (measurements only) the same steps run without any fsync.
 *
 * Blocking file I/O: every call here may wait for the disk. One process per spool (the lock). */
#ifndef SOP_SPOOL_H
#define SOP_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/spool_envelope.h"

#define SPOOL_TRAILER_LEN 42

struct spool;
struct spool_writer;
struct spool_body;

struct spool_scan_stats {
    size_t committed;   /* messages returned */
    size_t tmp_removed; /* uncommitted writes from before a crash, removed */
    size_t orphans;     /* bodies without an envelope (never committed), removed */
    size_t quarantined; /* envelopes (and their bodies) moved to spool/corrupt */
};

/* Open (creating with mode 0700 if missing) STATE_DIR/spool and its subdirectories and take the
 * spool's lock. do_fsync 0 skips every fsync (for measuring what fsync costs; never in
 * production). NULL with err on failure, including "another process holds the spool". */
struct spool *spool_new(const char *state_dir, int do_fsync, char *err, size_t errlen);
/* Releases the lock. Accepts NULL. */
void spool_free(struct spool *s);

/* Start a message: a fresh queue id and its body file under tmp/. NULL with err on failure. */
struct spool_writer *spool_writer_new(struct spool *s, char *err, size_t errlen);
/* The queue id this message will have once committed (for log lines before the commit). */
const char *spool_writer_id(const struct spool_writer *w);
/* Append body bytes as they arrive, in any chunk size. 0 ok; -1 with err (then only
 * spool_writer_abort is useful). */
int spool_writer_write(struct spool_writer *w, const void *buf, size_t len, char *err,
                       size_t errlen);
/* Make the message durable. env supplies account, device, mail_from, rcpts, smtputf8, eightbit,
 * created, attempts, next_attempt, last_error, held; on success its queue_id, size and
 * body_sha256 are set from the writer and the envelope is in queue/ (fsynced): now, and only now,
 * may the device hear 250. Frees w either way; on failure nothing is left behind and err says
 * why. */
int spool_writer_commit(struct spool_writer *w, struct spool_envelope *env, char *err,
                        size_t errlen);
/* Read back what w has written so far, before it is committed (direct-then-spool tries the
 * upstream first): a reader of exactly those bytes whose SHA-256 is checked at the end, like
 * spool_body_read's. Write nothing more to w while the reader is in use; free the reader
 * (spool_body_free) before committing or aborting w. NULL with err on failure. */
struct spool_body *spool_writer_reader(struct spool_writer *w, char *err, size_t errlen);
/* Drop an uncommitted message and free w. Accepts NULL. */
void spool_writer_abort(struct spool_writer *w);

/* Startup recovery. Empties tmp/, removes orphan bodies, moves envelopes that are garbled,
 * truncated or without a usable body (and the body, if any) to spool/corrupt/, logging each
 * (event=spool_orphan_removed | spool_quarantined, with queue_id= and reason=), and returns every
 * committed message sorted by creation time (then id) in *list (*n entries; free with
 * spool_list_free). Bodies are checked by length and trailer here, by hash when read.
 * 0 ok; -1 with err if a directory cannot be read. stats may be NULL. */
int spool_scan(struct spool *s, struct spool_envelope **list, size_t *n,
               struct spool_scan_stats *stats, char *err, size_t errlen);
void spool_list_free(struct spool_envelope *list, size_t n);

/* Read back one committed envelope. 1 found (env filled; spool_envelope_clear it); 0 no such
 * message; -1 unreadable or invalid, err says why. */
int spool_load_envelope(struct spool *s, const char *queue_id, struct spool_envelope *env,
                        char *err, size_t errlen);
/* Replace a committed message's envelope with env (a whole envelope as loaded or committed, same
 * queue id): how attempts, next_attempt, last_error (sanitized: see spool_error_sanitize) and
 * held change. Atomic and durable. 0 ok;
 * -1 with err, also when the message is no longer in the queue (never resurrected). */
int spool_update_state(struct spool *s, const struct spool_envelope *env, char *err, size_t errlen);
/* Remove a delivered (or bounced, or deleted) message: envelope first, then body. 0 ok (also if
 * it was already gone); -1 with err. */
int spool_remove(struct spool *s, const char *queue_id, char *err, size_t errlen);

/* Open a committed message's body for reading: checks its length and trailer against env.
 * NULL with err if missing or damaged. */
struct spool_body *spool_body_open(struct spool *s, const struct spool_envelope *env, char *err,
                                   size_t errlen);
/* Next bytes of the body: >0 bytes read into buf; 0 the end, and the whole body matched its
 * SHA-256. On failure send nothing of it as complete: -1 with err, a failure that may pass (an
 * I/O error: try again later); -2 with err, the body is damaged (its hash does not match, it is
 * shorter than its envelope says): it will never be whole again. */
ssize_t spool_body_read(struct spool_body *b, void *buf, size_t cap, char *err, size_t errlen);
/* The body's length in bytes (the envelope's size, or what the writer had written). */
uint64_t spool_body_size(const struct spool_body *b);
/* The body file's descriptor, borrowed (bytes [0, spool_body_size) are the message, the trailer
 * follows): for a reader that needs the message by offsets (Graph's MIME parser). Read the body
 * through spool_body_read to its end first: that checks its hash. */
int spool_body_fd(const struct spool_body *b);
void spool_body_free(struct spool_body *b);

/* Paths, for messages and tests: STATE_DIR/spool/queue/ID.env and .body. NULL if too long or not
 * a valid id. */
const char *spool_env_path(const struct spool *s, const char *queue_id, char *buf, size_t len);
const char *spool_body_path(const struct spool *s, const char *queue_id, char *buf, size_t len);

#endif

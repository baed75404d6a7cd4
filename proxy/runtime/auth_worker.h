/* Password checks off the event loop. A yescrypt check costs about 20 ms of CPU (measured: 19.4
 * ms with mkpasswd's default cost): on the loop, every login would stall every other session,
 * and a stream of wrong passwords could stall them all. A few threads run device_authenticate();
 * results come back to the loop through a pipe, so no libevent locking is needed. */
#ifndef SOP_AUTH_WORKER_H
#define SOP_AUTH_WORKER_H

#include <sys/socket.h>

struct event_base;
struct device_table;
struct cfg_device;
struct auth_worker;
struct auth_job;

/* On the loop thread: d is the device, or NULL with why set (for the log). */
typedef void (*auth_done_cb)(void *arg, const struct cfg_device *d, const char *why);

/* The table must outlive the worker (it is read from the threads, never written). NULL on
 * failure (threads or pipe could not be made). */
struct auth_worker *auth_worker_new(struct event_base *base, const struct device_table *t,
                                    unsigned threads);
/* Stops and joins the threads; jobs not yet answered are dropped without a callback. */
void auth_worker_free(struct auth_worker *w);
/* Queue a check; user and pass are copied and the copies wiped when done. NULL if it could not
 * be queued (then cb is not called). cb runs later, from the loop, never from inside this call. */
struct auth_job *auth_worker_check(struct auth_worker *w, const struct sockaddr *sa,
                                   const char *user, const char *pass, auth_done_cb cb, void *arg);
/* From the loop thread: cb will not be called for this job. */
void auth_worker_cancel(struct auth_job *j);

#endif

/* Password guessing: failed AUTH counted per source, each failure's reply delayed more than the
 * last, and a source that reaches the limit within the window blocked for a while. Pure: no
 * I/O, no loop; the clock is the caller's (a fake one in the unit test). Bounded: at most
 * max_entries sources are tracked, the least recently active (unblocked first) is forgotten.
 * State is in memory only: a restart forgets every count and block. */
#ifndef SOP_AUTH_THROTTLE_H
#define SOP_AUTH_THROTTLE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Whom a count belongs to: an IPv4 address (IPv4-mapped IPv6 counts as IPv4), or an IPv6 /64
 * (one host may use any address of its /64, so per-address counts would be dodged). */
struct auth_throttle_key {
    unsigned char b[17]; /* b[0]: 4 or 6; then 4 or 8 bytes, the rest zero */
};

struct auth_throttle_limits {
    unsigned fail_limit;     /* failures within window_ms that start a block */
    int64_t window_ms;       /* failures older than this (counted from the first) are forgotten */
    int64_t block_ms;        /* how long a block lasts */
    unsigned delay_first_ms; /* the first failure's delay; each next one doubles */
    unsigned delay_max_ms;   /* cap */
};

/* Milliseconds on a monotonic clock. */
typedef int64_t (*auth_throttle_clock_fn)(void *arg);

struct auth_throttle;

/* now NULL: CLOCK_MONOTONIC. NULL: out of memory. */
struct auth_throttle *auth_throttle_new(size_t max_entries, auth_throttle_clock_fn now,
                                        void *clock_arg);
void auth_throttle_free(struct auth_throttle *t);
/* Limits may change at any time (a reload); counts carry over. */
void auth_throttle_set_limits(struct auth_throttle *t, const struct auth_throttle_limits *lim);
/* 0 ok; -1 not an IPv4/IPv6 address. */
int auth_throttle_key_of(const struct sockaddr *sa, struct auth_throttle_key *key);
/* The key as text for logs: "192.0.2.1" or "2001:db8::/64". */
const char *auth_throttle_key_str(const struct auth_throttle_key *key, char *buf, size_t len);
/* 1 when key is blocked now (*remaining_ms: how much longer, may be NULL); 0 otherwise. */
int auth_throttle_blocked(struct auth_throttle *t, const struct auth_throttle_key *key,
                          int64_t *remaining_ms);
/* A failed AUTH from key: returns how long to wait before replying (ms). *blocked_now = 1 when
 * this failure reached the limit and started a block. */
unsigned auth_throttle_failed(struct auth_throttle *t, const struct auth_throttle_key *key,
                              int *blocked_now);
/* How many sources are tracked (tests). */
size_t auth_throttle_tracked(const struct auth_throttle *t);

#endif

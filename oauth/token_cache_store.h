/* The token cache's persistence through the token store (store/token_store.h): the one place
 * where oauth/ meets store/, through token_cache_set_persist's narrow hooks. */
#ifndef SOP_TOKEN_CACHE_STORE_H
#define SOP_TOKEN_CACHE_STORE_H

struct token_cache;
struct token_store;

/* Persist c's tokens in account's file of st (borrowed: st must outlive c), and load a
 * still-usable stored one now. 1 a token was loaded; 0 none; -1 failed (out of memory). */
int token_cache_store_attach(struct token_cache *c, struct token_store *st, const char *account);

#endif

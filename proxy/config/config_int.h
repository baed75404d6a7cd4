/* The config loader's insides, shared by its files: config.c (reading the file, sections, key
 * dispatch, error collection, config_free), config_keys.c (the tables of sections and keys),
 * config_value.c (the setters that parse and store one value), config_secret.c (values that are
 * files or credentials) and config_check.c (after parsing: defaults, required keys, what spans
 * keys and sections). Private to them: nothing else includes this. */
#ifndef SOP_CONFIG_INT_H
#define SOP_CONFIG_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proxy/config/config.h"

#define CONFIG_KEYS_MAX 40

#define CONFIG_KIB UINT64_C(1024)
#define CONFIG_MIB (CONFIG_KIB * 1024)
#define CONFIG_GIB (CONFIG_MIB * 1024)

enum config_kind { CONFIG_PROXY, CONFIG_UPSTREAM, CONFIG_ACCOUNT, CONFIG_DEVICE };

#define KEY_REQUIRED 1u /* reported at the section header when missing */
#define KEY_REPEAT 2u   /* may appear more than once; each value adds to a list */
#define KEY_EMPTY_OK 4u /* "key =" means "not set" (the ca_file =, token_url =) */

/* The current section: an index into config_ctx.sections, or one of these. */
#define CONFIG_NO_SECTION (-1)  /* before the first header */
#define CONFIG_BAD_SECTION (-2) /* a header already reported: its keys are skipped quietly */

struct config_ctx;
struct config_section;
struct config_key;

/* Validate value and store it in the section's object; report problems with config_err(). */
typedef void (*config_setter)(struct config_ctx *c, struct config_section *s,
                              const struct config_key *k, const char *value);

struct config_choice {
    const char *name;
    int value;
};

struct config_key {
    const char *name;
    config_setter set;
    size_t offset;   /* the field in the section's struct (struct config, cfg_account, ...) */
    const char *def; /* default, written as in the file; NULL: none, or computed later */
    uint64_t min, max;
    const struct config_choice *choices; /* NULL-terminated */
    unsigned flags;
    const char *what; /* what a valid value looks like, for messages */
};

struct config_section_def {
    const char *name;
    enum config_kind kind;
    int named; /* "[account NAME]" */
    const struct config_key *keys;
    size_t nkeys;
};

struct config_section {
    const struct config_section_def *def;
    size_t index;                  /* into cfg->accounts or cfg->devices */
    int line;                      /* 0: the section is not in the file (defaults only) */
    int key_line[CONFIG_KEYS_MAX]; /* where each key was first set; 0: not set */
    unsigned char key_empty[CONFIG_KEYS_MAX]; /* given as "key =": the default applies */
    char *account_ref; /* [device]: the account's name, resolved after parsing */
};

struct config_error {
    int line; /* 0: about the whole file */
    size_t seq;
    char *msg;
};

struct config_ctx {
    struct config *cfg;
    const char *path;
    FILE *fp;
    char *linebuf;
    size_t linecap;
    int lineno; /* the physical line inih's handler is looking at; setters report it */
    struct config_section *sections;
    size_t nsections;
    long cur; /* index into sections, CONFIG_NO_SECTION or CONFIG_BAD_SECTION */
    struct config_error *errors;
    size_t nerrors;
    int oom;
};

/* config.c */

/* Collect a problem at line (0: the whole file); out of memory sets c->oom. */
void config_err(struct config_ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* strdup that sets c->oom when it fails. */
char *config_strdup(struct config_ctx *c, const char *s);
/* Append name to the ", "-separated list in buf (*off: its length); 0 once it no longer fits. */
int config_join(char *buf, size_t len, size_t *off, const char *name);
/* "[proxy]", "[account NAME]", ... for messages. */
const char *config_section_name(const struct config_ctx *c, const struct config_section *s,
                                char *buf, size_t len);

/* config_keys.c */

/* [proxy], [upstream], [account NAME], [device NAME]: in this order, the first two unnamed. */
extern const struct config_section_def config_keys_sections[];
extern const size_t config_keys_nsections;
#define CONFIG_VALID_SECTIONS "[proxy], [upstream], [account NAME], [device NAME]"

/* config_value.c */

/* The setters named in the key tables (config_setter). */
#define CONFIG_SETTER(fn)                                                                          \
    void fn(struct config_ctx *c, struct config_section *s, const struct config_key *k,            \
            const char *value)
CONFIG_SETTER(config_value_set_uint);        /* k->min..k->max into an unsigned */
CONFIG_SETTER(config_value_set_port);        /* 1..65535 into a uint16_t */
CONFIG_SETTER(config_value_set_size);        /* "35M" into a uint64_t */
CONFIG_SETTER(config_value_set_duration);    /* "30s", "5m", "1h" into unsigned seconds */
CONFIG_SETTER(config_value_set_choice);      /* one of k->choices, stored as its int */
CONFIG_SETTER(config_value_set_choice_str);  /* one of k->choices, stored as the string */
CONFIG_SETTER(config_value_set_word);        /* printable, no blanks */
CONFIG_SETTER(config_value_set_text);        /* printable, blanks allowed */
CONFIG_SETTER(config_value_set_dns_name);    /* a DNS name */
CONFIG_SETTER(config_value_set_host);        /* a DNS name or an IP literal */
CONFIG_SETTER(config_value_set_abs_path);    /* an absolute path */
CONFIG_SETTER(config_value_set_mailbox);     /* local@domain */
CONFIG_SETTER(config_value_set_url);         /* https://, or http:// to loopback */
CONFIG_SETTER(config_value_set_proxy_url);   /* http://HOST:PORT, an HTTP forward proxy */
CONFIG_SETTER(config_value_set_listen);      /* adds to cfg->listen */
CONFIG_SETTER(config_value_set_listen_tls);  /* adds to cfg->listen_tls */
CONFIG_SETTER(config_value_set_endpoint);    /* one IP:port into a struct cfg_endpoint */
CONFIG_SETTER(config_value_set_addresses);   /* adds a device's addresses and CIDR blocks */
CONFIG_SETTER(config_value_set_account_ref); /* the section's account_ref, resolved later */
CONFIG_SETTER(config_value_set_recipients);  /* a struct rcpt_policy (allow_recipients) */

/* The field at offset in the object of section s (struct config, cfg_account or cfg_device). */
void *config_value_field(struct config_ctx *c, struct config_section *s, size_t offset);
/* Replace k's string field with a copy of value. */
void config_value_store(struct config_ctx *c, struct config_section *s, const struct config_key *k,
                        const char *value);
/* The choices' names, ", "-separated, in buf. */
const char *config_value_choices(const struct config_choice *ch, char *buf, size_t len);

/* config_secret.c */

CONFIG_SETTER(config_secret_set_file);          /* a regular file we can read */
CONFIG_SETTER(config_secret_set_key_file);      /* and nobody else can: a private key */
CONFIG_SETTER(config_secret_set_secret_file);   /* also loads account->client_secret */
CONFIG_SETTER(config_secret_set_password_file); /* also loads the cfg_upstream's password */
CONFIG_SETTER(config_secret_set_password_hash); /* a complete crypt(3) hash we accept */
CONFIG_SETTER(config_secret_set_store_key);     /* the token store's key: 32 bytes, 0600 */

/* config_check.c */

/* After parsing (every section, [proxy] and [upstream] too, present): defaults, required keys,
 * what spans keys and sections, and the values resolved from others. */
void config_check_all(struct config_ctx *c);
/* The line where key name was set in section s; 0: not set. */
int config_check_key_set(const struct config_section *s, const char *name);
/* A malloc'd formatted string; NULL (and c->oom) when out of memory. */
char *config_check_fmt(struct config_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* config_check_graph.c */

/* What upstream = graph means for an account, and the scopes that cannot work with its
 * upstream (a Graph token for SMTP, or an Exchange token for Graph). After the provider's
 * defaults are set. */
void config_check_graph(struct config_ctx *c, const struct config_section *s);

#endif

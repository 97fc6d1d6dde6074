/* dict: a dictionary of keys and typed values inside a zone, as OpenResty's ngx.shared.DICT
 * over nginx's slab allocator; what mg.shared and mg.limit_req are made of.
 *
 * A hash table of entries and an LRU list, in the zone's reserved bytes, over the zone's
 * first-fit allocator (zone.h). An entry is one block: hash-chain and LRU links, expiry, the
 * user's flags, key, value; a list's items are blocks of their own. Each operation follows
 * lua-nginx-module's ngx_http_lua_shdict.c step by step, so that what a script can observe is
 * OpenResty's: every lookup makes its entry the most recently used (ttl and expire do not);
 * an expired entry stays, stale, until something frees it: a store, get, incr or list
 * operation first frees up to two expired entries from the least recently used end, a
 * flush_expired frees them all, flush_all makes every entry stale. When a new value does not
 * fit, set, add, replace and incr evict from the least recently used end, an entry and the
 * expired ones behind it at a time, at most 30 times (`forcible`); safe_set, safe_add and the
 * list pushes never evict. Expiry is on the monotonic clock.
 *
 * Every function takes the zone's lock for its whole work, so each is atomic across workers,
 * and marks the zone as changing before it changes its structure (a worker killed in the
 * middle empties the zone for the next, see zone.h). An increment of a number that is already
 * the most recently used is one store in place and never leaves the zone inconsistent.
 *
 * Results: 0, or a positive value where said, for success; else one of the MG_DICT_* errors
 * below, negative errno values; mg_dict_strerror names them as the Lua API reports them. */
#ifndef MG_DICT_H
#define MG_DICT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "zone.h"

#define MG_DICT_MIN_SIZE (64 * 1024)
#define MG_DICT_MAX_KEY 65535 /* bytes, as OpenResty; a value is bounded by the zone only */

enum {
  MG_DICT_NOT_FOUND = -ENOENT,
  MG_DICT_EXISTS = -EEXIST,
  MG_DICT_NO_MEMORY = -ENOMEM,  /* the value does not fit (after the evictions its mode allows) */
  MG_DICT_NOT_A_NUMBER = -EDOM, /* an increment of a value that is not a number */
  MG_DICT_INVALID = -EINVAL,    /* an empty or too long key, nil for add/replace, a list item not a string or number */
  /* A list is to a value what a directory is to a file: */
  MG_DICT_NOT_A_LIST = -ENOTDIR, /* a list operation on a key whose value is not a list */
  MG_DICT_IS_LIST = -EISDIR,     /* a get of a key whose value is a list */
};

/* mg_dict_incr's success when it created the entry from `init` (0: incremented in place). */
#define MG_DICT_CREATED 1

typedef enum { MG_DICT_NIL, MG_DICT_STRING, MG_DICT_NUMBER, MG_DICT_BOOLEAN } mg_dict_type_t;

typedef struct {
  mg_dict_type_t type;
  const char *str; /* MG_DICT_STRING: len bytes (read from a dictionary: inside the zone) */
  size_t len;
  double num;     /* MG_DICT_NUMBER */
  int boolean;    /* MG_DICT_BOOLEAN: 0 or 1 */
  uint32_t flags; /* the user's flags stored with the value (a list item's: 0) */
} mg_dict_value_t;

/* How mg_dict_set stores: always, only a new key, only over an existing key; the safe modes
 * as set and add but without evicting anything. */
typedef enum { MG_DICT_SET, MG_DICT_ADD, MG_DICT_REPLACE, MG_DICT_SAFE_SET, MG_DICT_SAFE_ADD } mg_dict_mode_t;

/* Called under the zone's lock: they must be quick and must not call the dictionary. A value's
 * and a key's bytes are valid only during the call. */
typedef void (*mg_dict_on_value_t)(void *ud, const mg_dict_value_t *v);
typedef void (*mg_dict_on_key_t)(void *ud, const char *key, size_t klen);
/* Gets the key's value of mg_dict_update's len bytes in `value` when found is 1 (found 0:
 * `value` is the caller's buffer untouched) and `now`, the clock expiries count on; returns 1 to
 * store `value` as the key's value, 0 to leave the dictionary as it is. */
typedef int (*mg_dict_on_update_t)(void *ud, void *value, int found, double now);

/* The zone `name` of `size` bytes (at least MG_DICT_MIN_SIZE) laid out as a dictionary, from
 * mg_zone_get: the same zone again for the same name and size. Release it with mg_zone_unref.
 * Returns NULL with a message in err. */
mg_zone_t *mg_dict_open(const char *name, size_t size, char *err, size_t errlen);

/* Calls on_value with the key's live value. Returns 0, MG_DICT_NOT_FOUND (missing or expired;
 * on_value is not called), MG_DICT_IS_LIST or MG_DICT_INVALID. */
int mg_dict_get(mg_zone_t *d, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud);

/* As mg_dict_get, but an expired entry not yet freed is found too, with *stale set to 1 (0
 * for a live one); frees nothing. */
int mg_dict_get_stale(mg_zone_t *d, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud,
                      int *stale);

/* Stores v with v->flags under key as `mode` says, expiring after ttl seconds (0 or less:
 * never); a nil v with MG_DICT_SET or MG_DICT_SAFE_SET deletes the key. An expired entry
 * counts as absent for add and replace. *forcible is set to 1 if other entries were evicted to
 * make room (they stay evicted even when the value then does not fit), else 0. Returns 0,
 * MG_DICT_EXISTS (add), MG_DICT_NOT_FOUND (replace), MG_DICT_NO_MEMORY (an old value of
 * another size is gone too) or MG_DICT_INVALID. */
int mg_dict_set(mg_zone_t *d, mg_dict_mode_t mode, const char *key, size_t klen, const mg_dict_value_t *v,
                double ttl, int *forcible);

/* Adds n to the key's number and puts the sum in *result. A missing or expired key, when init
 * is not NULL, is made *init + n, without flags, expiring after init_ttl seconds (0: never),
 * and *forcible says whether that evicted other entries. Returns 0 (incremented in place),
 * MG_DICT_CREATED, MG_DICT_NOT_FOUND (no init), MG_DICT_NOT_A_NUMBER, MG_DICT_NO_MEMORY or
 * MG_DICT_INVALID. */
int mg_dict_incr(mg_zone_t *d, const char *key, size_t klen, double n, const double *init, double init_ttl,
                 double *result, int *forcible);

/* Reads, changes and writes back a string value of exactly len bytes in one hold of the lock
 * (a counter that is more than one number: limit_req's bucket). A value stored over an existing
 * one keeps its expiry; a new key expires after ttl seconds (0: never). A key whose value is of
 * another type or length, or expired, is taken as missing, and replaced if on_update stores.
 * Returns 0 (stored or not), MG_DICT_NO_MEMORY or MG_DICT_INVALID. */
int mg_dict_update(mg_zone_t *d, const char *key, size_t klen, void *value, size_t len, double ttl,
                   mg_dict_on_update_t on_update, void *ud);

/* Returns 0 (the key's entry, live or expired, was deleted) or MG_DICT_NOT_FOUND. */
int mg_dict_delete(mg_zone_t *d, const char *key, size_t klen);

/* The seconds the key has left in *left (0: it never expires; negative: it expired that long
 * ago and is not freed yet). Returns 0 or MG_DICT_NOT_FOUND. */
int mg_dict_ttl(mg_zone_t *d, const char *key, size_t klen, double *left);

/* Makes the key, even an expired one not freed yet, expire after ttl seconds from now (0 or
 * less: never). Returns 0 or MG_DICT_NOT_FOUND. */
int mg_dict_expire(mg_zone_t *d, const char *key, size_t klen, double ttl);

/* Calls on_key for the live keys, the least recently used first, at most max of them (0: all).
 * Returns how many. */
size_t mg_dict_keys(mg_zone_t *d, size_t max, mg_dict_on_key_t on_key, void *ud);

/* Makes every entry expired (stale), then frees the least recently used one and up to two
 * more behind it, as OpenResty's flush_all. */
void mg_dict_flush_all(mg_zone_t *d);

/* Frees the expired entries, from the least recently used end, at most max of them (0: all).
 * Returns how many. */
size_t mg_dict_flush_expired(mg_zone_t *d, size_t max);

/* Lists. A list is a value of its own type; its items are strings and numbers. */

/* Puts v (a string or a number) at the head (left nonzero) or the tail of the key's list,
 * making the list if the key is missing or expired; never evicts. *len is the list's length
 * after the push. Returns 0, MG_DICT_NOT_A_LIST, MG_DICT_INVALID or MG_DICT_NO_MEMORY, with
 * *len set to SIZE_MAX when not even the key's entry could be made (OpenResty then returns
 * false instead of nil). */
int mg_dict_push(mg_zone_t *d, int left, const char *key, size_t klen, const mg_dict_value_t *v, size_t *len);

/* Takes the item at the head (left nonzero) or the tail of the key's list and calls on_value
 * with it; the list's last item takes the key with it. Returns 0, MG_DICT_NOT_FOUND (missing or
 * expired), MG_DICT_NOT_A_LIST or MG_DICT_INVALID. */
int mg_dict_pop(mg_zone_t *d, int left, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud);

/* The number of items of the key's list in *len (0: missing or expired). Returns 0,
 * MG_DICT_NOT_A_LIST or MG_DICT_INVALID. */
int mg_dict_llen(mg_zone_t *d, const char *key, size_t klen, size_t *len);

/* The zone's size in bytes, and the bytes its free blocks hold. */
size_t mg_dict_capacity(mg_zone_t *d);
size_t mg_dict_free_space(mg_zone_t *d);

/* "not found", "exists", "no memory", "not a number", "invalid argument", "value not a list",
 * "value is a list" for the errors above. */
const char *mg_dict_strerror(int rc);

#endif

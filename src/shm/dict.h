/* dict: a dictionary of keys and typed values inside a zone, as OpenResty's ngx.shared.DICT
 * over nginx's slab allocator; what mg.shared and mg.limit_req are made of.
 *
 * A hash table of entries and an LRU list, in the zone's reserved bytes, over the zone's
 * first-fit allocator (zone.h). An entry is one block: hash-chain and LRU links, expiry, key,
 * value. When a new value does not fit, the least recently used entries are evicted until it
 * does (`forcible`), so a set of a value that fits in the zone never fails. Expiry is on the
 * monotonic clock; an expired entry is never returned and is freed when next met.
 *
 * Every function takes the zone's lock for its whole work, so each is atomic across workers,
 * and marks the zone as changing before it changes its structure (a worker killed in the
 * middle empties the zone for the next, see zone.h). An increment of an existing number is one
 * store in place and never leaves the zone inconsistent.
 *
 * Results: 0, or a positive value where said, for success; else one of the MG_DICT_* errors
 * below, negative errno values; mg_dict_strerror names them as the Lua API reports them. */
#ifndef MG_DICT_H
#define MG_DICT_H

#include <errno.h>
#include <stddef.h>

#include "zone.h"

#define MG_DICT_MIN_SIZE (64 * 1024)
#define MG_DICT_MAX_KEY (64 * 1024)
#define MG_DICT_MAX_VALUE (1024 * 1024)

enum {
  MG_DICT_NOT_FOUND = -ENOENT,
  MG_DICT_EXISTS = -EEXIST,
  MG_DICT_NO_MEMORY = -ENOMEM,  /* the value does not fit even with every other entry evicted */
  MG_DICT_NOT_A_NUMBER = -EDOM, /* an increment of a value that is not a number */
  MG_DICT_INVALID = -EINVAL,    /* an empty or too long key, a too long value, nil for add/replace */
};

/* mg_dict_incr's success when it created the entry from `init` (0: incremented in place). */
#define MG_DICT_CREATED 1

typedef enum { MG_DICT_NIL, MG_DICT_STRING, MG_DICT_NUMBER, MG_DICT_BOOLEAN } mg_dict_type_t;

typedef struct {
  mg_dict_type_t type;
  const char *str; /* MG_DICT_STRING: len bytes (read from a dictionary: inside the zone) */
  size_t len;
  double num;  /* MG_DICT_NUMBER */
  int boolean; /* MG_DICT_BOOLEAN: 0 or 1 */
} mg_dict_value_t;

/* How mg_dict_set stores: always, only a new key, only over an existing key. */
typedef enum { MG_DICT_SET, MG_DICT_ADD, MG_DICT_REPLACE } mg_dict_mode_t;

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

/* Calls on_value with the key's live value and makes it the most recently used. Returns 0, or
 * MG_DICT_NOT_FOUND (on_value is not called). */
int mg_dict_get(mg_zone_t *d, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud);

/* Stores v under key as `mode` says, expiring after ttl seconds (0: never); a nil v with
 * MG_DICT_SET deletes the key. *forcible is set to 1 if other entries were evicted to make room
 * (they stay evicted even when the value then does not fit), else 0. Returns 0,
 * MG_DICT_EXISTS (MG_DICT_ADD), MG_DICT_NOT_FOUND (MG_DICT_REPLACE), MG_DICT_NO_MEMORY (the old
 * value is gone too) or MG_DICT_INVALID. */
int mg_dict_set(mg_zone_t *d, mg_dict_mode_t mode, const char *key, size_t klen, const mg_dict_value_t *v,
                double ttl, int *forcible);

/* Adds n to the key's number and puts the sum in *result. A missing key, when init is not
 * NULL, is created with *init + n, expiring after init_ttl seconds (0: never), and *forcible
 * says whether that evicted other entries. Returns 0 (incremented in place), MG_DICT_CREATED,
 * MG_DICT_NOT_FOUND (no init), MG_DICT_NOT_A_NUMBER, MG_DICT_NO_MEMORY or MG_DICT_INVALID. */
int mg_dict_incr(mg_zone_t *d, const char *key, size_t klen, double n, const double *init, double init_ttl,
                 double *result, int *forcible);

/* Reads, changes and writes back a string value of exactly len bytes in one hold of the lock
 * (a counter that is more than one number: limit_req's bucket). A value stored over an existing
 * one keeps its expiry and becomes the most recently used; a new key expires after ttl seconds
 * (0: never). A key whose value is of another type or length is taken as missing, and replaced
 * if on_update stores. Returns 0 (stored or not), MG_DICT_NO_MEMORY or MG_DICT_INVALID. */
int mg_dict_update(mg_zone_t *d, const char *key, size_t klen, void *value, size_t len, double ttl,
                   mg_dict_on_update_t on_update, void *ud);

/* Returns 0 (the key was deleted) or MG_DICT_NOT_FOUND. */
int mg_dict_delete(mg_zone_t *d, const char *key, size_t klen);

/* The seconds the key has left in *left (0: it never expires). Returns 0 or MG_DICT_NOT_FOUND. */
int mg_dict_ttl(mg_zone_t *d, const char *key, size_t klen, double *left);

/* Makes the key expire after ttl seconds from now (0: never). Returns 0 or MG_DICT_NOT_FOUND. */
int mg_dict_expire(mg_zone_t *d, const char *key, size_t klen, double ttl);

/* Calls on_key for the live keys, most recently used first, at most max of them (0: all).
 * Returns how many. */
size_t mg_dict_keys(mg_zone_t *d, size_t max, mg_dict_on_key_t on_key, void *ud);

/* Deletes every key. */
void mg_dict_flush_all(mg_zone_t *d);

/* The zone's size in bytes, and the bytes its free blocks hold. */
size_t mg_dict_capacity(mg_zone_t *d);
size_t mg_dict_free_space(mg_zone_t *d);

/* "not found", "exists", "no memory", "not a number", "invalid argument" for the errors above. */
const char *mg_dict_strerror(int rc);

#endif

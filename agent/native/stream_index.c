/* Hash index of a stream table: 64-bit stream key -> table slot (agent/features/stream_table.py's HashIndex).
 *
 * Open addressing with linear probing over a power-of-two array of int32 cells holding slot + 1 (0: empty);
 * the key of each slot lives in slot_key, so a cell is just 4 bytes.  Keys are already 64-bit hashes; a
 * Fibonacci multiply spreads them once more over the cells.  Removal shifts the following cells back, so no
 * tombstones accumulate under a spoofed flood.  The table is kept at most half full by its owner.
 */
#include <stdint.h>

static uint64_t home(uint64_t key, int32_t bits) { return (key * 0x9E3779B97F4A7C15ULL) >> (64 - bits); }

/* out[i] = slot of keys[i], or -1. */
void iotguard_index_find(int64_t n, const uint64_t *keys, const int32_t *cells, int32_t bits, const uint64_t *slot_key,
                         int64_t *out)
{
    const uint64_t mask = ((uint64_t)1 << bits) - 1;
    for (int64_t i = 0; i < n; i++) {
        uint64_t at = home(keys[i], bits);
        out[i] = -1;
        for (; cells[at]; at = (at + 1) & mask) {
            if (slot_key[cells[at] - 1] == keys[i]) {
                out[i] = cells[at] - 1;
                break;
            }
        }
    }
}

/* Enter keys[i] at slots[i] (keys absent and distinct; the caller keeps free cells). */
void iotguard_index_add(int64_t n, const uint64_t *keys, const int64_t *slots, int32_t *cells, int32_t bits,
                        uint64_t *slot_key)
{
    const uint64_t mask = ((uint64_t)1 << bits) - 1;
    for (int64_t i = 0; i < n; i++) {
        uint64_t at = home(keys[i], bits);
        while (cells[at])
            at = (at + 1) & mask;
        cells[at] = (int32_t)(slots[i] + 1);
        slot_key[slots[i]] = keys[i];
    }
}

/* Remove the entries of slots[i] (each present once). */
void iotguard_index_remove(int64_t n, const int64_t *slots, int32_t *cells, int32_t bits, const uint64_t *slot_key)
{
    const uint64_t mask = ((uint64_t)1 << bits) - 1;
    for (int64_t i = 0; i < n; i++) {
        uint64_t at = home(slot_key[slots[i]], bits);
        while (cells[at] != slots[i] + 1)
            at = (at + 1) & mask;
        /* Backward shift: move later cells of the probe run into the hole when their home allows it. */
        uint64_t hole = at;
        for (uint64_t next = (hole + 1) & mask; cells[next]; next = (next + 1) & mask) {
            uint64_t want = home(slot_key[cells[next] - 1], bits);
            /* The entry may fill the hole unless its home lies cyclically in (hole, next]. */
            int stays = hole <= next ? (hole < want && want <= next) : (hole < want || want <= next);
            if (!stays) {
                cells[hole] = cells[next];
                hole = next;
            }
        }
        cells[hole] = 0;
    }
}

/* The capture stage's loops in C: walking classic pcap records and reading header fields.
 *
 * Plain C with no Python API, loaded with ctypes (agent/native).  The Python/numpy code
 * (agent/capture/pcap.py, agent/capture/parse.py) stays the fallback and the tests
 * (tests/agent/capture/test_capture_native.py) compare the two on real, fuzzed and
 * corrupt captures.  Captures are untrusted input: every read is checked against the
 * buffer's length, and a request the checks refuse is reported (status) rather than read,
 * so that the caller can run its numpy path instead.
 *
 * The layouts are not repeated here: the callers pass the field offsets and widths from
 * the declared layouts (pcap.PCAP_RECORD_HEADER, agent/capture/headers.py).
 */
#include <stdint.h>

/* The unsigned big-endian value of width (1..8) bytes at p. */
static uint64_t read_be(const uint8_t *p, int64_t width)
{
    switch (width) {
    case 1:
        return p[0];
    case 2:
        return (uint64_t)p[0] << 8 | p[1];
    case 4:
        return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
    default: {
        uint64_t v = 0;
        for (int64_t b = 0; b < width; b++)
            v = (v << 8) | p[b];
        return v;
    }
    }
}

static uint32_t read_u32(const uint8_t *p, int big_endian)
{
    if (big_endian)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* The complete records at the start of a classic pcap byte stream data[0:len].
 *
 * A record is a header of header_len bytes, four 4-byte unsigned fields at field_at[0..3]
 * (timestamp seconds, timestamp fraction, captured length, original length), then the
 * captured bytes.  Records are taken while the header and the captured bytes are complete
 * and the captured length is at most max_frame: a larger one means a corrupt header, and the
 * walk stops at it (nothing after it can be trusted).
 *
 * Out, per record (at most capacity): start (of its header), ts_sec, ts_frac, cap_len, wire_len.
 * result[0] = records taken, result[1] = where the walk stopped (after the last record taken),
 * result[2] = status: 0, or 1 when the arguments were refused (nothing written).
 */
void iotguard_pcap_records(const uint8_t *data, int64_t len, int32_t big_endian, int64_t header_len,
                           const int64_t *field_at, int64_t max_frame, int64_t capacity, int64_t *start,
                           int64_t *ts_sec, int64_t *ts_frac, int64_t *cap_len, int64_t *wire_len, int64_t *result)
{
    result[0] = 0;
    result[1] = 0;
    result[2] = 1;
    if (len < 0 || capacity < 0 || header_len < 4 || max_frame < 0)
        return;
    for (int k = 0; k < 4; k++)
        if (field_at[k] < 0 || field_at[k] + 4 > header_len)
            return;
    result[2] = 0;
    int64_t pos = 0, count = 0;
    while (pos <= len - header_len && count < capacity) {
        const uint8_t *h = data + pos;
        int64_t cap = read_u32(h + field_at[2], big_endian);
        int64_t after = pos + header_len + cap;  /* cap < 2**32: no overflow */
        if (cap > max_frame || after > len)
            break;
        start[count] = pos;
        ts_sec[count] = read_u32(h + field_at[0], big_endian);
        ts_frac[count] = read_u32(h + field_at[1], big_endian);
        cap_len[count] = cap;
        wire_len[count] = read_u32(h + field_at[3], big_endian);
        count++;
        pos = after;
    }
    result[0] = count;
    result[1] = pos;
}

/* Every field of one header for n frames: the unsigned big-endian value of buf[start[i] + offset[k]] ..
 * (width[k] bytes) where present[i], 0 elsewhere, into out[k * n + i].
 *
 * The fields lie within the header's first size bytes (width 1..8), and each present frame must have
 * start[i] >= 0 and start[i] + size <= buf_len.  status[0] = 0 when every value was read; otherwise 1
 * (arguments refused) or 2 (a frame out of bounds), and the output is incomplete.
 */
void iotguard_read_header_fields(const uint8_t *buf, int64_t buf_len, int64_t n, const int64_t *start,
                                 const uint8_t *present, int64_t nfields, const int64_t *offset,
                                 const int64_t *width, int64_t size, int64_t *out, int64_t *status)
{
    status[0] = 1;
    if (buf_len < 0 || n < 0 || nfields < 0 || size < 0)
        return;
    for (int64_t k = 0; k < nfields; k++)
        if (offset[k] < 0 || width[k] < 1 || width[k] > 8 || offset[k] + width[k] > size)
            return;
    for (int64_t i = 0; i < n; i++) {
        if (!present[i]) {
            for (int64_t k = 0; k < nfields; k++)
                out[k * n + i] = 0;
            continue;
        }
        int64_t s = start[i];
        if (s < 0 || s > buf_len - size) {
            status[0] = 2;
            return;
        }
        const uint8_t *p = buf + s;
        for (int64_t k = 0; k < nfields; k++)
            out[k * n + i] = (int64_t)read_be(p + offset[k], width[k]);
    }
    status[0] = 0;
}

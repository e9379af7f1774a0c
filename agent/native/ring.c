/* Frames of one TPACKET_V3 ring block, copied out in one pass: the compiled twin of read_block() in
 * agent/capture/interface.py (which stays the fallback and the reference the tests compare with).
 *
 * The block is kernel memory shared with an untrusted network's frames: every offset is checked against the
 * block before it is used, and an inconsistent descriptor refuses the whole block, as the Python version does.
 */
#include <linux/if_packet.h>
#include <stdint.h>
#include <string.h>

#define HDRLEN 68       /* interface.TPACKET3_HDRLEN: tpacket3_hdr aligned + sockaddr_ll */
#define ETH_P_8021Q 0x8100

/* block: the block's first byte.  Per frame: ts, wire_len, cap_len; the frames' bytes one after another in data
 * (capacity data_cap; a frame whose 802.1Q tag the kernel stripped gets it back, 4 bytes more).
 * Returns the number of frames, -1 for an inconsistent block, -2 when an output is too small (frames that overlap
 * can make a block hold more than the caller planned for: it then takes the Python path). */
int64_t iotguard_ring_block(const uint8_t *block, int64_t block_size, int64_t max_frames, double *ts,
                            int64_t *wire_len, int64_t *cap_len, uint8_t *data, int64_t data_cap)
{
    const struct tpacket_block_desc *desc = (const void *)block;
    const uint32_t num = desc->hdr.bh1.num_pkts, first = desc->hdr.bh1.offset_to_first_pkt;
    if (num && (first < sizeof *desc || first + HDRLEN > (uint64_t)block_size || desc->hdr.bh1.blk_len > block_size))
        return -1;
    if (num > max_frames)
        return -2;
    uint64_t pos = first, used = 0;
    for (uint32_t i = 0; i < num; i++) {
        if (pos + HDRLEN > (uint64_t)block_size || pos & 3)
            return -1;
        const struct tpacket3_hdr *h = (const void *)(block + pos);
        const uint64_t start = pos + h->tp_mac, len = h->tp_snaplen;
        if (start + len > (uint64_t)block_size)
            return -1;
        const int tagged = (h->tp_status & TP_STATUS_VLAN_VALID) != 0;
        if (used + len + 4 * tagged > (uint64_t)data_cap)
            return -2;
        uint8_t *out = data + used;
        if (tagged) { /* put the tag back after the two MAC addresses */
            uint16_t tpid = h->tp_status & TP_STATUS_VLAN_TPID_VALID ? h->hv1.tp_vlan_tpid : ETH_P_8021Q;
            uint16_t tci = h->hv1.tp_vlan_tci & 0xFFFF;
            uint64_t head = len < 12 ? len : 12;
            tpid = tpid ? tpid : ETH_P_8021Q;
            memcpy(out, block + start, head);
            const uint8_t tag[4] = {tpid >> 8, tpid & 0xFF, tci >> 8, tci & 0xFF};
            memcpy(out + head, tag, 4);
            memcpy(out + head + 4, block + start + head, len - head);
        } else {
            memcpy(out, block + start, len);
        }
        ts[i] = (double)h->tp_sec + (double)h->tp_nsec * 1e-9;
        wire_len[i] = (int64_t)h->tp_len + 4 * tagged;
        cap_len[i] = (int64_t)len + 4 * tagged;
        used += len + 4 * tagged;
        if (h->tp_next_offset == 0 && i + 1 < num)
            return -1;
        pos += h->tp_next_offset;
    }
    return num;
}

#!/usr/bin/env python3
"""make_corpus.py - writes the seed corpus of the fuzz_proto target.

Each seed is a byte stream of valid frames, byte for byte what proto/proto.c
encodes: a u32 little-endian body length, the record type byte, then the
record's fields. The fuzzer mutates these, so every decoder starts from input
it accepts. tests/test_proto.c checks that every seed still decodes cleanly.

usage: tests/fuzz/make_corpus.py [OUTDIR]   (default: tests/fuzz/corpus/proto)
"""
import os
import struct
import sys

MAGIC = b"HTRC"
VERSION = 1

REC_HELLO, REC_SITE, REC_HEAP, REC_EVENTS, REC_LOST, REC_END, REC_PREVIOUS = 1, 2, 3, 4, 5, 6, 7
OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_ALIGNED, OP_FREE, OP_FAILED = 1, 2, 3, 4, 5, 6
END_CLEAN, END_KILLED = 1, 5
HELLO_F_DROP = 0x1
CAPS_DEFAULT = 0x1006  # DEFAULT|8BIT|32BIT, the system heap
CAP_DMA, CAP_INTERNAL = 0x8, 0x800
U64 = (1 << 64) - 1


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def zigzag(v):
    """v is a wrapped 64-bit difference; read it as signed, then zigzag."""
    v &= U64
    if v >= 1 << 63:
        v -= 1 << 64
    return ((v << 1) ^ (v >> 63)) & U64


def string(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def frame(rtype, body):
    return struct.pack("<IB", len(body) + 1, rtype) + body


def hello(app, exe, argv, pid=4242, ppid=1, flags=0):
    body = MAGIC + struct.pack("<HBBHIIQQ", VERSION, 8, 1, flags, pid, ppid,
                               1700000000123456789, 123456789)
    body += string(app) + string(exe) + struct.pack("<H", len(argv))
    body += b"".join(string(a) for a in argv)
    return frame(REC_HELLO, body)


def site(sid, line, file, func, typ=""):
    return frame(REC_SITE, varint(sid) + varint(line) + string(file) + string(func) + string(typ))


def heap(hid, caps, start, size, name):
    body = varint(hid) + b"".join(varint(c) for c in caps)
    return frame(REC_HEAP, body + struct.pack("<QQ", start, size) + string(name))


def lost(stream, first_seq, count, why=1):
    return frame(REC_LOST, varint(stream) + varint(first_seq) + varint(count) + bytes([why]))


def end(reason, undelivered, signal=6):
    killed = bytes([signal]) if reason == END_KILLED else b""
    return frame(REC_END, bytes([reason]) + varint(undelivered) + killed)


def previous(start_ns, events, reported=None):
    tail = b"" if reported is None else varint(reported)  # version 4 sends reported
    return frame(REC_PREVIOUS, struct.pack("<Q", start_ns) + varint(events) + tail)


class Stream:
    """Delta state of one stream, as ht_evstate_t."""

    def __init__(self, sid):
        self.sid, self.seq = sid, 0
        self.time = self.ptr = self.cur_bytes = self.cur_blocks = self.total = 0
        self.site = self.heap = self.caps = 0

    def event(self, op, t, ptr, size, usable, cur_bytes, cur_blocks, total, site=1,
              heap=0, caps=CAPS_DEFAULT, failed_op=0, old_ptr=0, old_usable=0, align=0):
        # Flags 0: every field is sent (the encoder may omit repeats; the
        # decoder takes both).
        out = bytearray([op]) + (bytes([failed_op]) if op == OP_FAILED else b"")
        out += varint(zigzag(t - self.time)) + varint(site) + varint(heap) + varint(caps)
        out += varint(zigzag(ptr - self.ptr))
        if op == OP_REALLOC or (op == OP_FAILED and failed_op == OP_REALLOC):
            out += varint(zigzag(old_ptr - ptr)) + varint(old_usable)
        if op == OP_ALIGNED or (op == OP_FAILED and failed_op == OP_ALIGNED):
            out += varint(align)
        out += varint(size)
        if op != OP_FREE:
            out += varint(zigzag(usable - size))
        out += varint(zigzag(cur_bytes - self.cur_bytes))
        out += varint(zigzag(cur_blocks - self.cur_blocks))
        out += varint((total - self.total) & U64)
        self.time, self.ptr, self.total = t, ptr & U64, total
        self.cur_bytes, self.cur_blocks = cur_bytes, cur_blocks
        self.site, self.heap, self.caps = site, heap, caps
        return bytes(out)

    def compact(self, op, t, ptr, size, usable=0, site=None, old_ptr=0, old_usable=0):
        """The compact form (PROTOCOL.md, "Compact events"): heap and caps as
        before, the totals as the op implies; short fields where they fit."""
        site = self.site if site is None else site
        sizes = size | (old_usable if op == OP_REALLOC else 0)
        short_time, short_sizes = t - self.time < 1 << 16, sizes < 1 << 16
        opb = op | 0x80 | (0x08 if site == self.site else 0)
        opb |= (0x10 if short_time else 0) | (0x20 if short_sizes else 0)
        sz = "<H" if short_sizes else "<I"
        out = bytearray([opb]) + struct.pack("<H" if short_time else "<I", t - self.time)
        if site != self.site:
            out += struct.pack("<H", site)
        out += struct.pack("<i", ptr - self.ptr)
        if op == OP_REALLOC:
            out += struct.pack("<i", old_ptr - ptr) + struct.pack(sz, old_usable)
        out += struct.pack(sz, size)
        if op != OP_FREE:
            out.append(usable - size)
        if op == OP_FREE:
            self.cur_bytes, self.cur_blocks = self.cur_bytes - size, self.cur_blocks - 1
        elif op == OP_REALLOC:
            self.cur_bytes += usable - old_usable
            self.total += max(usable - old_usable, 0)
        else:
            self.cur_bytes, self.cur_blocks = self.cur_bytes + usable, self.cur_blocks + 1
            self.total += usable
        self.time, self.ptr, self.site = t, ptr, site
        return bytes(out)

    def frame(self, events):
        head = struct.pack("<IQI", self.sid, self.seq, len(events))
        self.seq += len(events)
        return frame(REC_EVENTS, head + b"".join(events))


def every_op(s):
    """One event of each operation; pointers up and down, a negative total."""
    tib = 1 << 40
    return [
        s.event(OP_MALLOC, 1000, 0x7F0000001000, 24, 24, 24, 1, 24),
        s.event(OP_CALLOC, 1500, 0x555500002000, tib, tib + 16, 24 + tib + 16, 2, 40 + tib),
        s.event(OP_REALLOC, 1900, U64 - 0xFFF, 2 * tib, 2 * tib, 24 + 2 * tib, 2, 40 + 3 * tib,
                old_ptr=0x555500002000, old_usable=tib + 16),
        s.event(OP_ALIGNED, 2000, 0x1000, 100, 112, 136 + 2 * tib, 3, 152 + 3 * tib,
                heap=2, caps=CAP_DMA | CAP_INTERNAL, align=4096),
        s.event(OP_FREE, 2100, U64 - 0xFFF, 2 * tib, 2 * tib, 136, 2, 152 + 3 * tib),
        s.event(OP_FREE, 2200, 0x7F0000800000, 4096, 4096, 136 - 4096, 1, 152 + 3 * tib),
        s.event(OP_FAILED, 2300, 0, U64, 0, 136 - 4096, 1, 152 + 3 * tib, failed_op=OP_MALLOC),
        s.event(OP_FAILED, 2400, 0, 8 * tib, 0, 136 - 4096, 1, 152 + 3 * tib,
                failed_op=OP_REALLOC, old_ptr=0x1000, old_usable=112),
        s.event(OP_FAILED, 2500, 0, 16 * tib, 0, 136 - 4096, 1, 152 + 3 * tib,
                failed_op=OP_ALIGNED, align=1 << 21, heap=2, caps=CAP_DMA),
    ]


def compact_ops(s):
    """A varint malloc (site, heap and caps), then the compact form of each
    op it has, with short and long fields, and a varint event after them."""
    evs = [s.event(OP_MALLOC, 1000, 0x7F0000001000, 24, 24, 24, 1, 24)]
    evs.append(s.compact(OP_MALLOC, 1100, 0x7F0000001040, 100, 104))
    evs.append(s.compact(OP_FREE, 1200, 0x7F0000001000, 24, site=2))
    evs.append(s.compact(OP_REALLOC, 1300 + (1 << 20), 0x7F0000101000, 70000, 70008,
                         old_ptr=0x7F0000001040, old_usable=104))
    evs.append(s.compact(OP_CALLOC, 1400 + (1 << 20), 0x7F00000F0000, 16, 24, site=1))
    evs.append(s.event(OP_FREE, 1500 + (1 << 20), 0x7F00000F0000, 24, 24,
                       s.cur_bytes - 24, s.cur_blocks - 1, s.total))
    return s.frame(evs)


def seeds():
    a, b = Stream(1), Stream(2)
    tib = 1 << 40
    session = (hello("demo", "/usr/bin/demo", ["demo", "--size", "", "x y z"])
               + site(1, 42, "src/main.c", "main")
               + site(2, 7, "src/list.c", "list_push", "struct node")
               + heap(2, [CAP_DMA | CAP_INTERNAL, CAP_DMA, 0], 0x3FFB0000, 65536, "dma")
               + a.frame(every_op(a))
               + b.frame([b.event(OP_MALLOC, 50, 0x4000, 8, 16, 16, 1, 16)])
               # a second frame of stream 1: its deltas continue from the first
               + a.frame([a.event(OP_FREE, 3000, 0x1000, 112, 112, 136 - 4096 - 112, 0,
                                  152 + 3 * tib, heap=2, caps=CAP_DMA | CAP_INTERNAL)])
               + lost(1, 10, 5)
               + end(END_CLEAN, 5))
    s = Stream(7)
    return {
        "hello": hello("app", "/bin/app", ["app", "-v"], flags=HELLO_F_DROP),
        "hello_noargs": hello("", "", []),
        "site": site(0xFFFFFFFF, 1234567, "src/parser.c", "parse_block", "struct node"),
        "heap": heap(3, [CAP_DMA, CAPS_DEFAULT, 0xFFFFFFFF], 0xFFFF800000000000, 1 << 40, "pool"),
        "lost": lost(0xFFFFFFFF, U64 - 100, 100),
        "end": end(END_KILLED, U64),
        "previous": previous(U64 - 1, 123456, 7890),
        "events": s.frame(every_op(s)),
        "events_empty": Stream(3).frame([]),
        "events_compact": compact_ops(Stream(9)),
        "session": session,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "proto")
    os.makedirs(outdir, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into fuzz/corpus/<target>/.

Run from anywhere: `python3 fuzz/gen_corpus.py`. It only (re)writes the files it names, so seeds
added by hand or kept from fuzzing runs (message_assembly's, the upgrade_* ones) are left alone.
The input layouts are described at the top of each target in fuzz/fuzz_targets/.
"""

import os
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode, payload=b"", fin=True, mask=KEY, rsv=0, long_form=None):
    """One frame; `long_form` forces the 16- or 64-bit length form (non-minimal encodings)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if long_form == 64 or (long_form is None and n > 0xFFFF):
        head = bytes([first, mask_bit | 127]) + struct.pack(">Q", n)
    elif long_form == 16 or (long_form is None and n > 125):
        head = bytes([first, mask_bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, mask_bit | n])
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def close(code, reason=b""):
    return frame(CLOSE, struct.pack(">H", code) + reason)


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# Wire streams a server receives (client frames, masked unless said otherwise).
EURO = "€".encode()
WIRES = {
    "text_hello": frame(TEXT, b"hello"),
    "binary_300": frame(BINARY, bytes(range(256)) + bytes(44)),
    "fragmented_text_with_ping": frame(TEXT, "héllo ".encode(), fin=False)
    + frame(PING, b"p1")
    + frame(CONT, b"w\xc3", fin=False)
    + frame(PONG)
    + frame(CONT, b"\xb6rld " + EURO[:1], fin=False)
    + frame(CONT, EURO[1:] + "🎉".encode()),
    "empty_messages": frame(TEXT) + frame(BINARY, fin=False) + frame(CONT),
    "close_normal": frame(TEXT, b"bye") + close(1000, b"done"),
    "close_empty_then_data": frame(CLOSE) + frame(TEXT, b"ignored"),
    "close_bad_code": close(1005),
    "close_one_byte": frame(CLOSE, b"\x03"),
    "close_bad_reason": close(1000, b"\xc0\xaf"),
    "invalid_utf8": frame(TEXT, b"ok \xed\xa0\x80 surrogate"),
    "utf8_cut_at_end": frame(TEXT, EURO[:2]),
    "ping_125": frame(PING, b"x" * 125),
    "ping_126": frame(PING, b"x" * 126),
    "fragmented_ping": frame(PING, b"p", fin=False),
    "unmasked": frame(TEXT, b"hi", mask=None),
    "reserved_opcode": bytes([0x83, 0x80]) + KEY,
    "rsv1": frame(TEXT, b"x", rsv=4),
    "continuation_first": frame(CONT, b"x"),
    "text_inside_message": frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"),
    "non_minimal_lengths": frame(BINARY, b"sixteen", long_form=16) + frame(TEXT, b"sixty-four", long_form=64),
    "length_overflow": bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1]) + KEY,
    "frame_over_limit": frame(BINARY, bytes(5000)),
    "many_small_frames": b"".join(frame(BINARY, struct.pack(">I", i)) for i in range(40)),
}

# frame_decode: [max_frame/16 - 1] [max_message/16 - 1] [rsv] [piece count] [piece sizes - 1] wire
for name, wire in WIRES.items():
    write("frame_decode", name, bytes([0xFF, 0xFF, 0x00, 3, 0, 6, 63]) + wire)
write("frame_decode", "tight_limits_fragments", bytes([0, 1, 0, 1, 4]) + frame(BINARY, bytes(16), fin=False)
      + frame(CONT, bytes(16), fin=False) + frame(CONT, bytes(1)))
write("frame_decode", "rsv1_allowed", bytes([0xFF, 0xFF, 0x84, 0]) + frame(TEXT, b"x", rsv=4))

# session: [bit 0: client role, bit 1: we close] [close point, /256 of the wire] [max_frame/16 - 1]
# [max_message/16 - 1] [piece count] [piece sizes - 1] wire
for name in ["fragmented_text_with_ping", "close_normal", "close_empty_then_data", "invalid_utf8", "unmasked",
             "ping_125"]:
    write("session", name, bytes([0, 0, 0xFF, 0xFF, 3, 0, 6, 63]) + WIRES[name])
write("session", "we_close_midway", bytes([2, 128, 0xFF, 0xFF, 2, 0, 9]) + WIRES["fragmented_text_with_ping"]
      + frame(PING, b"late") + close(1000))
write("session", "client_role", bytes([1, 0, 0xFF, 0xFF, 1, 2]) + frame(TEXT, b"hi", mask=None)
      + frame(PING, b"p", mask=None) + frame(CLOSE, mask=None))
write("session", "client_role_masked", bytes([1, 0, 0xFF, 0xFF, 0]) + frame(TEXT, b"masked"))

# frame_roundtrip: the raw input is tried as a header, then read as structured values.
for name in ["text_hello", "binary_300", "length_overflow", "reserved_opcode", "non_minimal_lengths", "unmasked"]:
    write("frame_roundtrip", name, WIRES[name])
write("frame_roundtrip", "server_frame_64", frame(BINARY, b"z" * 70, mask=None, long_form=64))

# mask: [key 4] [phase 8] [cut count] [cuts, 2 bytes each] data
for name, key, phase, cuts, data in [
    ("aligned", KEY, 0, [], bytes(range(64))),
    ("phase3_cuts", b"\xde\xad\xbe\xef", 3, [1, 33, 34], bytes(range(200))),
    ("long_odd", b"\x01\x02\x03\x04", 2, [5, 64, 999], b"a" * 1003),
    ("zero_key", b"\0\0\0\0", 1, [7], b"unchanged"),
]:
    cut_bytes = b"".join(struct.pack("<H", c) for c in cuts)
    write("mask", name, key + struct.pack("<Q", phase) + bytes([len(cuts)]) + cut_bytes + data)

# utf8: [cut count] [cuts, 2 bytes each] bytes
for name, cuts, text in [
    ("ascii", [], b"plain ascii text"),
    ("multibyte_cut_inside", [2, 5, 9], "κόσμε 日本 🎉".encode()),
    ("emoji_bytewise", [1, 2, 3], "🎉".encode()),
    ("surrogate", [1, 2], b"\xed\xa0\x80"),
    ("overlong", [1], b"\xc0\xaf"),
    ("above_max", [1], b"\xf4\x90\x80\x80"),
    ("truncated_end", [3], b"abc\xe2\x82"),
    ("lone_continuation", [], b"ok\x80"),
    ("five_byte", [2], b"\xf8\x88\x80\x80\x80"),
]:
    write("utf8", name, bytes([len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts) + text)

# upgrade_request / upgrade_response: extra seeds beside the handshake engineer's.
CRLF = b"\r\n"


def head(lines):
    return CRLF.join(line.encode() for line in lines) + CRLF + CRLF


BASE_REQUEST = [
    "GET /ws HTTP/1.1",
    "Host: example.com",
    "upgrade: WebSocket",
    "connection: keep-alive, Upgrade",
    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version: 13",
    "Sec-WebSocket-Protocol: chat, superchat",
    "Sec-WebSocket-Protocol: v2.json",
    "X-Tab:\tvalue with\ttabs ",
]
write("upgrade_request", "fuzz_lowercase_repeated", head(BASE_REQUEST) + frame(TEXT, b"hi"))
write("upgrade_request", "fuzz_bare_lf", head(BASE_REQUEST).replace(b"\r\nHost", b"\nHost"))
write("upgrade_request", "fuzz_obs_fold", head(BASE_REQUEST[:2] + [" folded"] + BASE_REQUEST[2:]))
write("upgrade_request", "fuzz_two_keys", head(BASE_REQUEST + ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]))
write("upgrade_request", "fuzz_partial", head(BASE_REQUEST)[:-3])

BASE_RESPONSE = [
    "HTTP/1.1 101 Switching Protocols",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
]
write("upgrade_response", "fuzz_extension", head(BASE_RESPONSE + ["Sec-WebSocket-Extensions: permessage-deflate"]))
write("upgrade_response", "fuzz_two_protocols", head(BASE_RESPONSE + ["Sec-WebSocket-Protocol: chat, superchat"]))
write("upgrade_response", "fuzz_wrong_accept", head(BASE_RESPONSE[:3] + ["Sec-WebSocket-Accept: x3JJHMbDL1EzLkh9GBhXDw=="]))
write("upgrade_response", "fuzz_http10", head(["HTTP/1.0 101 Switching Protocols"] + BASE_RESPONSE[1:]))
write("upgrade_response", "fuzz_no_reason", head(["HTTP/1.1 101"] + BASE_RESPONSE[1:] + ["sec-websocket-protocol: chat"]))

# proxy_header: PROXY protocol headers (v1 text, v2 binary), followed by the HTTP request they
# precede. The first 19 bytes also seed the target's built headers (see its doc comment).
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(ver_cmd, family, block):
    return V2_SIG + bytes([ver_cmd, family]) + struct.pack(">H", len(block)) + block


GET = b"GET /chat HTTP/1.1\r\nHost: example.com\r\n\r\n"
V4_BLOCK = bytes([203, 0, 113, 7, 192, 0, 2, 1]) + struct.pack(">HH", 51234, 443)
V6_BLOCK = bytes.fromhex("20010db8000000000000000000000007" "20010db8000000000000000000000001") + struct.pack(">HH", 51234, 443)
PROXY_SEEDS = {
    "v1_tcp4": b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n" + GET,
    "v1_tcp6": b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n" + GET,
    "v1_unknown": b"PROXY UNKNOWN\r\n" + GET,
    "v1_unknown_long": b"PROXY UNKNOWN " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n",
    "v1_partial": b"PROXY TCP4 203.0.113.7 192.0",
    "v1_bad_port": b"PROXY TCP4 203.0.113.7 192.0.2.1 051234 443\r\n",
    "v2_tcp4": v2(0x21, 0x11, V4_BLOCK) + GET,
    "v2_tcp6_tlvs": v2(0x21, 0x21, V6_BLOCK + b"\x04\x00\x00" + b"\xea\x00\x05vpce1" + b"\x03\x00\x04\x01\x02\x03\x04") + GET,
    "v2_local": v2(0x20, 0x00, b"") + GET,
    "v2_unix": v2(0x21, 0x31, bytes(216)),
    "v2_bad_tlv": v2(0x21, 0x11, V4_BLOCK + b"\x04\x00\x09"),
    "v2_too_long": V2_SIG + b"\x21\x11\x02\x19",
}
for name, data in PROXY_SEEDS.items():
    write("proxy_header", name, data)

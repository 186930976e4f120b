#!/usr/bin/env python3
"""Pack PNG renders of holdfast.svg into .ico and .icns containers.

Both formats accept PNG-compressed entries (ICO since Windows Vista, ICNS
since macOS 10.7), so the containers are only headers around the PNGs that
`render` made: small, and no ImageMagick or icnsutils needed.

usage: pack.py DIR   (DIR holds 16.png ... 1024.png; writes into cwd)
"""

import struct
import sys
from pathlib import Path

ICO_SIZES = [16, 24, 32, 48, 64, 128, 256]
# (type, pixel size): the PNG-capable ICNS element types.
ICNS_TYPES = [
    (b"icp4", 16),
    (b"icp5", 32),
    (b"ic11", 32),  # 16@2x
    (b"icp6", 64),
    (b"ic12", 64),  # 32@2x
    (b"ic07", 128),
    (b"ic08", 256),
    (b"ic13", 256),  # 128@2x
    (b"ic09", 512),
    (b"ic14", 512),  # 256@2x
    (b"ic10", 1024),  # 512@2x
]


def ico(pngs: dict[int, bytes]) -> bytes:
    head = struct.pack("<HHH", 0, 1, len(ICO_SIZES))
    offset = 6 + 16 * len(ICO_SIZES)
    entries, blobs = b"", b""
    for s in ICO_SIZES:
        data = pngs[s]
        dim = 0 if s >= 256 else s  # 0 means 256 in an ICO directory
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
        blobs += data
    return head + entries + blobs


def icns(pngs: dict[int, bytes]) -> bytes:
    body = b"".join(t + struct.pack(">I", 8 + len(pngs[s])) + pngs[s] for t, s in ICNS_TYPES)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def main() -> None:
    src = Path(sys.argv[1])
    pngs = {s: (src / f"{s}.png").read_bytes() for s in {*ICO_SIZES, *(s for _, s in ICNS_TYPES)}}
    Path("holdfast.ico").write_bytes(ico(pngs))
    Path("holdfast.icns").write_bytes(icns(pngs))


if __name__ == "__main__":
    main()

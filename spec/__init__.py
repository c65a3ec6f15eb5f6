"""LiteTransformer spec: the one source of truth shared by gateware, driver and firmware.

Pure Python on purpose (no migen, no litex): the driver and the golden model import it on
machines without the HDL toolchain. This file holds the host link contract (bulk path, checksum
engine, info block); spec.isa the instruction set, parameters and DRAM formats; spec.registers
the core's register word layouts; spec.numerics the integer formats and functions. The hash
covers all four.

The SoC exposes ``SPEC_VERSION`` and ``spec_hash()`` in read-only registers; the driver refuses
to talk to a device whose values differ from its own.
"""

import hashlib
import json

# Bump on any change that the host and the device must agree on.
SPEC_VERSION = (0, 4, 0)

# Host link -----------------------------------------------------------------------------------------
# UARTBone command bytes (LiteX Stream2Wishbone wire protocol).
LINK_CMD_WRITE_INCR  = 0x01
LINK_CMD_READ_INCR   = 0x02
LINK_CMD_WRITE_FIXED = 0x03
LINK_CMD_READ_FIXED  = 0x04
LINK_MAX_BURST_WORDS = 255     # UARTBone's 8-bit length field.

# A UARTBone command must complete within this many device cycles or the bridge drops it and
# resynchronises. On boards this is LiteX's 100 ms; in simulation bytes arrive one per cycle, so a
# short timeout keeps recovery after a dropped link quick in wall time.
LINK_TIMEOUT_SIM_CYCLES = 200_000

# Bulk path (host -> DRAM writer) status bits.
HOSTDMA_STATUS_DONE    = 0   # every expected word was written to DRAM.
HOSTDMA_STATUS_WINDOW  = 1   # base/length outside the DRAM window or misaligned: nothing written.
HOSTDMA_STATUS_OVERRUN = 2   # the host sent more words than the length: extra words dropped.

# DRAM checksum engine status bits.
CHECKSUM_STATUS_DONE   = 0
CHECKSUM_STATUS_WINDOW = 1   # range outside the DRAM window or misaligned: nothing read.

# CRC-32 as zlib computes it (reflected, polynomial 0xEDB88320, init and final xor 0xFFFFFFFF).
CRC32_POLY_REFLECTED = 0xEDB88320


def crc32_reference(data, crc=0):
    """Bitwise CRC-32 (zlib's), written out so the gateware's XOR network has a readable spec."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC32_POLY_REFLECTED if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _spec_contents():
    from spec import isa, numerics, registers
    num = {k: v for k, v in vars(numerics).items() if k.isupper() and isinstance(v, (int, float))}
    tables = {k: hashlib.sha256(getattr(numerics, k).tobytes()).hexdigest()
              for k in ("EXP2_TABLE", "SIGMOID_TABLE", "RSQRT_TABLE")}
    return {
        "isa": isa.spec_contents(),
        "registers": registers.spec_contents(),
        "numerics": num,
        "tables": tables,
        "version": list(SPEC_VERSION),
        "link": [LINK_CMD_WRITE_INCR, LINK_CMD_READ_INCR, LINK_CMD_WRITE_FIXED,
                 LINK_CMD_READ_FIXED, LINK_MAX_BURST_WORDS],
        "hostdma_status": [HOSTDMA_STATUS_DONE, HOSTDMA_STATUS_WINDOW, HOSTDMA_STATUS_OVERRUN],
        "checksum_status": [CHECKSUM_STATUS_DONE, CHECKSUM_STATUS_WINDOW],
        "crc32_poly": CRC32_POLY_REFLECTED,
    }


def spec_version_word():
    """SPEC_VERSION packed as the device register holds it: major<<16 | minor<<8 | patch."""
    major, minor, patch = SPEC_VERSION
    return (major << 16) | (minor << 8) | patch


def spec_hash():
    """32-bit hash of everything in the spec (first 4 bytes of sha256 over canonical JSON)."""
    blob = json.dumps(_spec_contents(), sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big")

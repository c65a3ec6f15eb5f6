"""The Device's bulk transfers: uploads through the host DMA writer, verified by the device's
CRC (sending only what differs where asked), the CRC itself, and DRAM read and written through
the host window. A mixin of ``driver.device.Device``: it uses the Device's registers and link.
"""

import time
import zlib

import spec
from driver.errors import ChecksumMismatch, DeviceError, LinkError

# Bits of the blocks' status registers, from the spec.
HOSTDMA_DONE    = 1 << spec.HOSTDMA_STATUS_DONE
HOSTDMA_WINDOW  = 1 << spec.HOSTDMA_STATUS_WINDOW
HOSTDMA_OVERRUN = 1 << spec.HOSTDMA_STATUS_OVERRUN
CHECKSUM_DONE   = 1 << spec.CHECKSUM_STATUS_DONE
CHECKSUM_WINDOW = 1 << spec.CHECKSUM_STATUS_WINDOW

UPLOAD_CHUNK = 64 * 1024          # bytes handed to the link per write (progress granularity)
PRESENT_CHUNK = 64 * 1024         # upload(skip_present): the granularity of "already on the device"
READ_CHUNK = 16 * 1024            # bytes per read_dram exchange


class BulkTransfers:
    def upload(self, offset, data, progress=None, skip_present=False):
        """Write ``data`` to DRAM at ``offset`` through the bulk path and verify it with the
        device's CRC. The range is padded with zeros to whole DRAM beats; the CRCs cover the
        padded range. ``skip_present``: first compare the device's CRC of the range, then of
        each PRESENT_CHUNK of it, with the image's, and send only the chunks that differ (a
        model already on the device is not sent again). ``progress(done, total)`` counts the
        bytes to send. Returns rate figures. Safe to call again after a failure."""
        data = bytes(data)
        align = max(self.port_bytes, 4)
        padded = data + bytes(-len(data) % align)
        self._check_range(offset, len(padded), "upload")
        host_crc = zlib.crc32(padded)
        t0 = time.monotonic()
        c0 = self.cycles()
        dma0 = getattr(self.link, "dma_cycles", None)      # PCIe: the DMA's own cycles
        ranges = self._differing(offset, padded, host_crc) if skip_present else [(0, len(padded))]
        total = sum(n for _, n in ranges)
        done = 0
        for start, n in ranges:
            def chunk_progress(sent, _n, base=done):
                if progress:
                    progress(base + sent, total)
            self._send(offset + start, padded[start:start + n], chunk_progress)
            done += n
        c1 = self.cycles()
        t1 = time.monotonic()
        device_crc = self.checksum(offset, len(padded))
        if device_crc != host_crc:
            raise ChecksumMismatch(f"upload: DRAM 0x{offset:x}+{len(padded)} has CRC {device_crc:08x}, "
                                   f"host sent CRC {host_crc:08x}")
        return {
            "bytes": len(padded),
            "bytes_sent": total,
            "host_crc": host_crc,
            "device_crc": device_crc,
            "cycles": c1 - c0,
            "seconds": t1 - t0,
            "bytes_per_cycle": total / max(1, c1 - c0),
            **({} if dma0 is None else {"dma_bytes_per_cycle": total / max(1, self.link.dma_cycles - dma0)}),
            "bytes_per_second": total / max(1e-9, t1 - t0),
        }

    def _differing(self, offset, padded, host_crc):
        """The (start, length) ranges of ``padded`` whose bytes the device does not hold at
        ``offset``, by its CRC of the whole and then of each PRESENT_CHUNK (merged where
        adjacent)."""
        if self.checksum(offset, len(padded)) == host_crc:
            return []
        ranges = []
        for start in range(0, len(padded), PRESENT_CHUNK):
            chunk = padded[start:start + PRESENT_CHUNK]
            if self.checksum(offset + start, len(chunk)) == zlib.crc32(chunk):
                continue
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + len(chunk))
            else:
                ranges.append((start, len(chunk)))
        return ranges

    def _send(self, offset, padded, progress=None):
        """One bulk write through the host DMA writer: ``padded`` (whole beats) at ``offset``."""
        self.set_regs({"hostdma_base": offset, "hostdma_length": len(padded)})
        self.write_reg("hostdma_start", 1)
        origin, _ = self.csr.region("hostdma")
        sent = 0
        for i in range(0, len(padded), UPLOAD_CHUNK):
            chunk = padded[i:i + UPLOAD_CHUNK]
            self._on_link("write_stream", origin, chunk)
            sent += len(chunk)
            if progress:
                progress(sent, len(padded))
        status = self._wait_upload(len(padded) // 4)
        if status & HOSTDMA_WINDOW:
            raise DeviceError(f"upload: the device refused range 0x{offset:x}+{len(padded)} (window error)")
        if status & HOSTDMA_OVERRUN:
            raise LinkError("upload: the device received more words than were sent: the link garbled data")

    def _wait_upload(self, words_expected, stall_timeout=10.0):
        """Poll the writer until every word is in DRAM; fail when the count stops moving."""
        last, last_change = -1, time.monotonic()
        while True:
            status = self.read_reg("hostdma_status", timeout=stall_timeout)
            if status & (HOSTDMA_DONE | HOSTDMA_WINDOW):
                return status
            words = self.read_reg("hostdma_words")
            if words != last:
                last, last_change = words, time.monotonic()
            elif time.monotonic() - last_change > stall_timeout:
                self._broken = True
                raise LinkError(f"upload stalled: the device received {words} of {words_expected} words "
                                f"and nothing more for {stall_timeout:.0f} s (link lost data?)")
            time.sleep(0.02)

    def checksum(self, offset, length, timeout=60.0):
        """Device-side zlib CRC-32 of DRAM[offset : offset + length] (beat aligned)."""
        self._check_range(offset, length, "checksum")
        if length % max(self.port_bytes, 4):
            raise ValueError(f"checksum: length {length} is not a multiple of {self.port_bytes} bytes")
        self.set_regs({"checksum_base": offset, "checksum_length": length})
        self.write_reg("checksum_start", 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.read_reg("checksum_status")
            if status & CHECKSUM_WINDOW:
                raise DeviceError(f"checksum: the device refused range 0x{offset:x}+{length}")
            if status & CHECKSUM_DONE:
                return self.read_reg("checksum_crc")
        raise DeviceError(f"checksum of {length} bytes did not finish within {timeout:.0f} s")

    def read_dram(self, offset, length, verify=True):
        """Read DRAM through the host window. ``verify``: the whole beats read are compared with
        the device's CRC of them (UARTBone's replies carry no checksum), read again once if they
        differ, and a ChecksumMismatch raised if they differ again."""
        if offset % 4 or length % 4:
            raise ValueError("read_dram: offset and length must be multiples of 4")
        align = max(self.port_bytes, 4)
        start = offset - offset % align
        end = -(-(offset + length) // align) * align if verify else offset + length
        self._check_range(start, end - start, "read_dram")
        if not verify:
            return self._read_window(offset, length)
        for attempt in range(2):
            data = self._read_window(start, end - start)
            device_crc, host_crc = self.checksum(start, end - start), zlib.crc32(data)
            if device_crc == host_crc:
                return data[offset - start:offset - start + length]
        raise ChecksumMismatch(f"read_dram: DRAM 0x{start:x}+{end - start} has CRC {device_crc:08x}, the bytes "
                               f"received twice have CRC {host_crc:08x}: the link garbles replies")

    def _read_window(self, offset, length):
        origin, _ = self.csr.region("dram_window")
        # In chunks, so the per-reply timeout bounds a stall, not the size of the read.
        return b"".join(self._on_link("read_bytes", origin + offset + at, min(READ_CHUNK, length - at))
                        for at in range(0, length, READ_CHUNK))

    def _write_dram_beats(self, offset, data):
        """write_dram on a link with no word access to DRAM (PCIe: BAR0 reaches the CSRs only):
        the whole beats around ``data`` read, patched and sent through the host writer, its CRC
        checked like an upload's."""
        align = max(self.port_bytes, 4)
        start = offset - offset % align
        end = -(-(offset + len(data)) // align) * align
        old = self.read_dram(start, end - start) if (start, end) != (offset, offset + len(data)) else b""
        beats = old[:offset - start] + data + old[offset - start + len(data):]
        for attempt in range(2):
            self._send(start, beats)
            if self.checksum(start, len(beats)) == zlib.crc32(beats):
                return
        raise ChecksumMismatch(f"write_dram: DRAM 0x{start:x}+{len(beats)} does not hold the bytes written twice")

    def write_dram(self, offset, data, verify=True):
        """Write a few bytes through the host window (the slot table of each step; patches).
        ``verify``: the device's CRC of whole beats (or a verified read-back of a part of one)
        must show the bytes, else they are written once more, then ChecksumMismatch."""
        if offset % 4 or len(data) % 4:
            raise ValueError("write_dram: offset and length must be multiples of 4")
        self._check_range(offset - offset % max(self.port_bytes, 4), len(data), "write_dram")
        if not getattr(self.link, "dram_words", True):
            return self._write_dram_beats(offset, bytes(data))
        origin, _ = self.csr.region("dram_window")
        words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
        align = max(self.port_bytes, 4)
        for attempt in range(2 if verify else 1):
            self._on_link("write", origin + offset, words)
            if not verify:
                return
            if offset % align == 0 and len(data) % align == 0:
                if self.checksum(offset, len(data)) == zlib.crc32(data):
                    return
            elif self.read_dram(offset, len(data)) == bytes(data):
                return
        raise ChecksumMismatch(f"write_dram: DRAM 0x{offset:x}+{len(data)} does not hold the bytes written "
                               f"twice: the link garbles commands")

"""The host link: LiteX's UARTBone wire protocol over any pyserial port.

``socket://127.0.0.1:PORT`` reaches the simulator, ``/dev/ttyUSB0`` a board: the same bytes
either way. Every command goes out in one ``write()`` and the TCP socket has TCP_NODELAY, so a
command never waits on a delayed ACK while the device's bridge runs its command timeout.
"""

import socket
import time

import numpy as np
import serial

import spec
from driver.errors import LinkError, LinkTimeout


class Link:
    """UARTBone client: 32-bit word reads and writes at byte addresses on the SoC bus."""

    def __init__(self, url, baudrate=115200, timeout=5.0, resync_wait=0.5):
        self.url = url
        self.timeout = timeout
        self.resync_wait = resync_wait   # > the device's command timeout in wall time
        self.bytes_sent = 0
        self.bytes_received = 0
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout,
                                              write_timeout=timeout, do_not_open=True)
            self.port.open()
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open link {url}: {e}") from None
        sock = getattr(self.port, "_socket", None)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Small buffers bound the bytes in flight, so a read queued behind a bulk upload is
            # answered within the timeout.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)

    def close(self):
        try:
            self.port.close()
        except Exception:
            pass

    # Wire ----------------------------------------------------------------------------------------
    @staticmethod
    def _header(cmd, nwords, addr):
        if addr % 4:
            raise ValueError(f"address 0x{addr:08x} is not word aligned")
        return bytes([cmd, nwords]) + (addr // 4).to_bytes(4, "big")

    def _send(self, data):
        try:
            self.port.write(data)
        except serial.SerialTimeoutException:
            raise LinkTimeout(f"link {self.url} stalled: the device took no data for {self.timeout:.1f} s") from None
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"link {self.url} lost while sending: {e}") from None
        self.bytes_sent += len(data)

    def _recv(self, n, timeout=None):
        data = b""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while len(data) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.port.timeout = left
                data += self.port.read(n - len(data))
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"link {self.url} lost while reading: {e}") from None
        finally:
            self.port.timeout = self.timeout
        self.bytes_received += len(data)
        if len(data) < n:
            raise LinkTimeout(f"link {self.url}: device sent {len(data)} of {n} bytes within "
                              f"{self.timeout if timeout is None else timeout:.1f} s")
        return data

    # Words ---------------------------------------------------------------------------------------
    def write(self, addr, words, incr=True):
        """Write 32-bit ``words`` from byte address ``addr`` (fixed address if not ``incr``)."""
        cmd = spec.LINK_CMD_WRITE_INCR if incr else spec.LINK_CMD_WRITE_FIXED
        out = bytearray()
        for i in range(0, len(words), spec.LINK_MAX_BURST_WORDS):
            chunk = words[i:i + spec.LINK_MAX_BURST_WORDS]
            out += self._header(cmd, len(chunk), addr + (4 * i if incr else 0))
            out += b"".join(int(w).to_bytes(4, "big") for w in chunk)
        self._send(bytes(out))

    def write_stream(self, addr, payload):
        """Send ``payload`` (bytes, a multiple of 4, little-endian words) as fixed-address bursts
        to ``addr``; returns after the bytes are handed to the link."""
        if len(payload) % 4:
            raise ValueError("write_stream: payload must be a multiple of 4 bytes")
        burst = 4 * spec.LINK_MAX_BURST_WORDS
        # UARTBone sends each word most significant byte first.
        swapped = np.frombuffer(payload, dtype="<u4").astype(">u4").tobytes()
        out = bytearray()
        for i in range(0, len(swapped), burst):
            chunk = swapped[i:i + burst]
            out += self._header(spec.LINK_CMD_WRITE_FIXED, len(chunk) // 4, addr)
            out += chunk
        self._send(bytes(out))

    def read(self, addr, nwords=1, incr=True, timeout=None):
        """Read ``nwords`` 32-bit words from byte address ``addr``."""
        cmd = spec.LINK_CMD_READ_INCR if incr else spec.LINK_CMD_READ_FIXED
        out = bytearray()
        for i in range(0, nwords, spec.LINK_MAX_BURST_WORDS):
            n = min(spec.LINK_MAX_BURST_WORDS, nwords - i)
            out += self._header(cmd, n, addr + (4 * i if incr else 0))
        self._send(bytes(out))
        data = self._recv(4 * nwords, timeout)
        return [int.from_bytes(data[i:i + 4], "big") for i in range(0, len(data), 4)]

    def read_each(self, addrs, timeout=None):
        """One word from each address in ``addrs``, all requested in one write (one round trip)."""
        self._send(b"".join(self._header(spec.LINK_CMD_READ_INCR, 1, a) for a in addrs))
        data = self._recv(4 * len(addrs), timeout)
        return [int.from_bytes(data[i:i + 4], "big") for i in range(0, len(data), 4)]

    def read_bytes(self, addr, nbytes, timeout=None):
        """Read ``nbytes`` (multiple of 4) of little-endian memory from ``addr``."""
        words = self.read(addr, nbytes // 4, timeout=timeout)
        return b"".join(w.to_bytes(4, "little") for w in words)

    def resync(self):
        """After a failed exchange: wait out the device's command timeout (so a half-received
        command is dropped, not completed with our next bytes), then discard stale replies."""
        time.sleep(self.resync_wait)
        try:
            self.port.reset_input_buffer()
            self.port.timeout = 0.05
            while self.port.read(4096):
                pass
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"link {self.url} lost while resynchronising: {e}") from None
        finally:
            self.port.timeout = self.timeout

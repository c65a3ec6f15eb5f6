"""The host link over Ethernet: Etherbone (LiteEth's bridge) on UDP, the link LiteX users know
from ``litex_server --udp``.

The same interface as driver.link.Link (32-bit word reads and writes at byte addresses on the
SoC bus), packets encoded with LiteX's own Etherbone classes. Each read carries a request id in
its return address, so a late reply to an earlier, timed-out read is recognised and dropped.
Replies come to the bridge's own port (1234) on this host, so the client binds that port, as
litex_server does. LiteEth's bridge takes one record a packet and holds one packet while it
carries out the last (its PHY cannot hold off a third), and writes are not answered: so a
packet of writes is followed by a read of ``fence_addr`` (a register without side effects),
whose answer says the writes are done, before the next goes out. (A record with both writes
and reads, which Etherbone allows, left LiteEth 2024.12's bridge answering nothing more.)
"""

import errno
import socket
import struct
import time

import numpy as np
from litex.tools.remote.etherbone import (EtherbonePacket, EtherboneReads, EtherboneRecord,
                                          EtherboneWrites)

from driver.errors import LinkError, LinkTimeout

MAX_RECORD_WORDS = 255            # an Etherbone record's count field is one byte


class EtherboneLink:
    """Etherbone client at ``host``:``port`` (UDP). ``fence_addr``: a register that reads
    without side effects (LiteX's scratch register), read to close each bulk window."""

    def __init__(self, host, port=1234, timeout=5.0, fence_addr=None):
        self.url = f"etherbone://{host}:{port}"
        self.addr = (host, port)
        self.timeout = timeout
        self.fence_addr = fence_addr
        self.bytes_sent = 0
        self.bytes_received = 0
        self._next_id = 1
        try:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # LiteEth's bridge answers to its own port on the sender's address, as litex_server
            # expects: the client takes that port (one client per host at a time).
            self.sock.bind(("", port))
            self.sock.connect(self.addr)          # replies from anyone else are not ours
        except OSError as e:
            self.sock.close()
            hint = " (another Etherbone client, litex_server --udp perhaps, holds it)" \
                if e.errno == errno.EADDRINUSE else ""
            raise LinkError(f"cannot open link {self.url}: UDP port {port}: {e}{hint}") from None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # Wire ----------------------------------------------------------------------------------------
    @staticmethod
    def _packet(record):
        packet = EtherbonePacket()
        packet.records = [record]
        packet.encode()
        return bytes(packet.bytes)

    def _send(self, data):
        try:
            self.sock.send(data)
        except OSError as e:
            raise LinkError(f"link {self.url} lost while sending: {e}") from None
        self.bytes_sent += len(data)

    # Words ---------------------------------------------------------------------------------------
    def write(self, addr, words, incr=True):
        """Write 32-bit ``words`` from byte address ``addr`` (one at a time if not ``incr``:
        LiteEth's bridge writes a record's words to successive addresses), in records of up to
        255 words, each answered (its fence read) before the next goes out."""
        self._check_aligned(addr)
        if not incr:
            for w in words:
                self.write(addr, [w])
            return
        for i in range(0, len(words), MAX_RECORD_WORDS):
            chunk = [int(w) & 0xFFFFFFFF for w in words[i:i + MAX_RECORD_WORDS]]
            record = EtherboneRecord()
            record.writes = EtherboneWrites(base_addr=addr + 4 * i, datas=chunk)
            record.wcount = len(chunk)
            self._send(self._packet(record))
            if self.fence_addr is not None:
                self._read_record([self.fence_addr], None)

    def write_stream(self, addr, payload):
        """``payload`` (bytes, a multiple of 4, little-endian words) to a window whose every
        address takes the next word (the HostDMAWriter's): records of up to 255 words, each
        from ``addr``."""
        if len(payload) % 4:
            raise ValueError("write_stream: payload must be a multiple of 4 bytes")
        words = np.frombuffer(payload, dtype="<u4").tolist()
        for i in range(0, len(words), MAX_RECORD_WORDS):
            self.write(addr, words[i:i + MAX_RECORD_WORDS])
    def read(self, addr, nwords=1, incr=True, timeout=None):
        """Read ``nwords`` 32-bit words from byte address ``addr``."""
        self._check_aligned(addr)
        addrs = [addr + (4 * i if incr else 0) for i in range(nwords)]
        return self.read_each(addrs, timeout)

    def read_each(self, addrs, timeout=None):
        """One word from each address in ``addrs``, in records of up to 255 reads."""
        out = []
        for i in range(0, len(addrs), MAX_RECORD_WORDS):
            out += self._read_record(addrs[i:i + MAX_RECORD_WORDS], timeout)
        return out

    def _read_record(self, addrs, timeout):
        """One packet of reads of ``addrs``; returns the words read."""
        for a in addrs:
            self._check_aligned(a)
        rid = self._next_id
        self._next_id = self._next_id % 0xFFFF_FFF0 + 1
        record = EtherboneRecord()
        record.reads = EtherboneReads(base_ret_addr=rid, addrs=list(addrs))
        record.rcount = len(addrs)
        self._send(self._packet(record))
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LinkTimeout(f"link {self.url}: no reply to a read of {len(addrs)} words within {wait:.1f} s "
                                  f"(is the SoC at that address, on this network?)")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(2048)
            except socket.timeout:
                continue
            except OSError as e:           # e.g. ICMP port unreachable: nothing listens there
                raise LinkError(f"link {self.url} lost while reading: {e}") from None
            self.bytes_received += len(data)
            reply = self._decode(data)
            if reply is not None and reply[0] == rid and len(reply[1]) == len(addrs):
                return reply[1]

    @staticmethod
    def _decode(data):
        """(return id, words) of a reply packet, or None if it is not one."""
        try:
            packet = EtherbonePacket(init=data)
            packet.decode()
            writes = packet.records[0].writes
            return writes.base_addr, list(writes.get_datas())
        except (ValueError, IndexError, AttributeError, struct.error):
            return None

    def read_bytes(self, addr, nbytes, timeout=None):
        """Read ``nbytes`` (multiple of 4) of little-endian memory from ``addr``."""
        words = self.read(addr, nbytes // 4, timeout=timeout)
        return b"".join(w.to_bytes(4, "little") for w in words)

    def resync(self):
        """Drop replies that arrived late (a datagram link has no half-sent command to wait out)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(2048)
        except (BlockingIOError, OSError):
            pass
        finally:
            self.sock.setblocking(True)

    @staticmethod
    def _check_aligned(addr):
        if addr % 4:
            raise ValueError(f"address 0x{addr:08x} is not word aligned")

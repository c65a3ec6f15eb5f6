"""A TCP proxy between the driver and the simulator that injects real link faults: it can stop
forwarding (a cable pulled mid-upload), flip a bit in a chosen byte sequence (line noise), or
``arm`` one fault at a byte offset of either direction: a flipped bit, dropped bytes, a pause,
or the connection cut."""

import socket
import threading
import time


class FaultyProxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.stall_after = None      # host->device bytes to forward before going silent
        self.corrupt = None          # bytes pattern whose first byte gets bit 0 flipped (once)
        self.forwarded = 0
        self.fault = None            # (kind, "up" | "down", byte offset from arming), applied once
        self.seen = {"up": 0, "down": 0}
        self.release = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, kind, direction, at):
        """One fault ``at`` bytes from now in ``direction`` (up: host to device): "garble" flips
        a bit, "drop" loses 3 bytes, "delay" pauses 1.5 s, "disconnect" closes the connection."""
        self.seen = {"up": 0, "down": 0}
        self.fault = (kind, direction, at)

    def _apply_fault(self, data, direction, src, dst):
        """``data`` after the armed fault, if it falls in this chunk; None: connection cut."""
        fault, start = self.fault, self.seen[direction]
        self.seen[direction] += len(data)
        if not fault or fault[1] != direction or not start <= fault[2] < start + len(data):
            return data
        self.fault = None
        kind, at = fault[0], fault[2] - start
        if kind == "garble":
            return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]
        if kind == "drop":
            return data[:at] + data[at + 3:]
        if kind == "delay":
            dst.sendall(data[:at])
            time.sleep(1.5)
            return data[at:]
        dst.sendall(data[:at])
        return None

    def close(self):
        self.closed = True
        self.listener.close()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:                   # the simulator is gone: the client sees a close
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, host_to_device):
        window = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if host_to_device:
                    if self.stall_after is not None and self.forwarded + len(data) > self.stall_after:
                        data = data[:max(0, self.stall_after - self.forwarded)]
                        if data:
                            dst.sendall(data)
                            self.forwarded += len(data)
                        # Go silent: read nothing more, so the host's writes back up and
                        # stall, until the test releases the cable (both ends then close).
                        self.release.wait(120)
                        break
                    if self.corrupt:
                        buf = window + data
                        at = buf.find(self.corrupt)
                        if at >= 0:
                            at -= len(window)
                            if at >= 0:
                                data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]
                                self.corrupt = None
                        window = buf[-64:]
                    self.forwarded += len(data)
                data = self._apply_fault(data, "up" if host_to_device else "down", src, dst)
                if data is None:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

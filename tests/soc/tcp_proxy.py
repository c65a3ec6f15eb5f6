"""A TCP proxy between the driver and the simulator that injects real link faults: it can stop
forwarding (a cable pulled mid-upload) or flip a bit in a chosen byte sequence (line noise)."""

import socket
import threading


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
        self.release = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.listener.close()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
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
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

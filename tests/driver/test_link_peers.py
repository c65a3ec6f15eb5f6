"""A target address that leads to something other than a LiteX SoC is named as such within the
link's timeout, not after minutes of waiting for a BIOS prompt (no simulator needed)."""

import socket
import threading
import time

import pytest

from driver.device import Device
from driver.errors import LinkError

CSR = """csr_base,ctrl,0xf0001000,,
csr_register,ctrl_scratch,0xf0001004,1,rw
csr_register,uart_xover_rxtx,0xf0002000,1,rw
csr_register,uart_xover_rxempty,0xf0002008,1,ro
"""


class Peer:
    """A TCP server that echoes what it gets (``echo``), or accepts and never answers."""

    def __init__(self, echo):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(2)
        self.port = self.listener.getsockname()[1]
        self.echo, self.conns = echo, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            while self.echo:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)

    def close(self):
        for c in self.conns:
            c.close()
        self.listener.close()


@pytest.mark.parametrize("echo", [True, False], ids=["echo server", "silent server"])
def test_a_peer_that_is_not_a_litex_soc_is_named_within_the_timeout(tmp_path, echo):
    csr = tmp_path / "csr.csv"
    csr.write_text(CSR)
    peer = Peer(echo)
    try:
        t0 = time.monotonic()
        with pytest.raises(LinkError, match="not a LiteX SoC|not answering as a LiteX SoC"):
            Device.open(f"sim://127.0.0.1:{peer.port}", csr=str(csr), timeout=1.0)
        assert time.monotonic() - t0 < 6
    finally:
        peer.close()

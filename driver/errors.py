"""Every failure the driver reports is one of these, with a message naming the cause."""


class LiteTransformerError(Exception):
    """Base class of the driver's errors."""


class LinkError(LiteTransformerError):
    """The host link failed: unreachable, closed, stalled or garbled."""


class LinkTimeout(LinkError):
    """The device did not answer within the timeout."""


class SimulatorDied(LinkError):
    """The simulator process exited while the driver was talking to it."""


class DeviceError(LiteTransformerError):
    """The device answered but reported a problem (error status, failed DRAM init...)."""


class SpecMismatch(DeviceError):
    """The device implements another spec version/hash than this driver."""


class ChecksumMismatch(DeviceError):
    """The device's CRC of a DRAM range differs from the host's CRC of the data sent."""


class CSRMapError(LiteTransformerError):
    """The CSR map (LiteX's csr.csv) is missing, unreadable, or lacks a register."""


class AcceleratorError(DeviceError):
    """The transformer core stopped with an error code (spec.isa.ERRORS)."""

    def __init__(self, message, code=0, addr=0):
        super().__init__(message)
        self.code, self.addr = code, addr

"""Registers by name from LiteX's own export (csr.csv): no address is written down anywhere else."""

import csv

from driver.errors import CSRMapError


class CSRMap:
    """Parsed csr.csv: registers (address, size in 32-bit words), constants, memory regions."""

    def __init__(self, path):
        self.path = path
        self.registers = {}    # name -> (address, nwords)
        self.bases = {}        # name -> address
        self.constants = {}
        self.regions = {}      # name -> (origin, size)
        try:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
        except OSError as e:
            raise CSRMapError(f"cannot read CSR map {path}: {e}") from None
        except (UnicodeDecodeError, csv.Error) as e:
            raise CSRMapError(f"{path} is not a LiteX csr.csv: {e}") from None
        for line, row in enumerate(rows, 1):
            if not row or row[0].startswith("#"):
                continue
            try:
                self._add(row)
            except (IndexError, ValueError):
                raise CSRMapError(f"{path}, line {line}: {','.join(row)!r} is not a csr.csv row "
                                  f"(csr_register/csr_base/constant/memory_region, name, "
                                  f"address or value, ...)") from None
        if not self.registers:
            raise CSRMapError(f"{path} holds no CSR registers: not a LiteX csr.csv")

    def _add(self, row):
        kind, name = row[0], row[1]
        if kind == "csr_register":
            self.registers[name] = (_address(row[2]), int(row[3]))
        elif kind == "csr_base":
            self.bases[name] = _address(row[2])
        elif kind == "constant":
            value = row[2]
            try:
                value = int(value, 0)
            except ValueError:
                pass
            self.constants[name] = value
        elif kind == "memory_region":
            self.regions[name] = (_address(row[2]), int(row[3]))

    def register(self, name):
        try:
            return self.registers[name]
        except KeyError:
            raise CSRMapError(f"register {name!r} is not in {self.path}; is this the CSR map of this SoC?") from None

    def region(self, name):
        try:
            return self.regions[name]
        except KeyError:
            raise CSRMapError(f"memory region {name!r} is not in {self.path}") from None


def _address(text):
    value = int(text, 0)
    if not 0 <= value < 1 << 32:
        raise ValueError(text)
    return value

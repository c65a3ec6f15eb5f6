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
        for row in rows:
            if not row or row[0].startswith("#"):
                continue
            kind, name = row[0], row[1]
            if kind == "csr_register":
                self.registers[name] = (int(row[2], 0), int(row[3]))
            elif kind == "csr_base":
                self.bases[name] = int(row[2], 0)
            elif kind == "constant":
                value = row[2]
                try:
                    value = int(value, 0)
                except ValueError:
                    pass
                self.constants[name] = value
            elif kind == "memory_region":
                self.regions[name] = (int(row[2], 0), int(row[3]))
        if not self.registers:
            raise CSRMapError(f"{path} holds no CSR registers: not a LiteX csr.csv")

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


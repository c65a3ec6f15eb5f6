"""LitePCIe's UltraScale+ PHY for simulation: everything of LitePCIe's is kept (its TLP
adapters and the wrapper around the hard block, pcie_usp_support.v); only the hard block,
which Vivado would generate, is the socket in usp_hard_ip.v that a root-complex model drives
(soc/pcie/host.py)."""

import os

from litepcie.phy.usppciephy import USPPCIEPHY

SOCKET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "usp_hard_ip.v")


class SimUSPPCIEPHY(USPPCIEPHY):
    def add_sources(self, platform, phy_path=None, phy_filename=None):
        import litepcie.phy.usppciephy as usp
        verilog = os.path.join(os.path.dirname(usp.__file__), "xilinx_usp")
        w = self.pcie_data_width
        for name in ("axis_iff.v", f"s_axis_rq_adapt_{w}b.v", f"m_axis_rc_adapt_{w}b.v",
                     f"m_axis_cq_adapt_{w}b.v", f"s_axis_cc_adapt_{w}b.v", "pcie_usp_support.v"):
            platform.add_source(os.path.join(verilog, name))
        platform.add_source(SOCKET)

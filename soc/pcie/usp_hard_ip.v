// The UltraScale+ PCIe hard block (pcie4_uscale_plus, as LitePCIe's pcie_usp_support.v
// instantiates it: 128-bit AXI-Stream, one physical function) as a socket for a simulation
// model: every port of the block is a signal here that the model drives or samples
// (cocotbext-pcie's UltraScalePlusPcieDevice, through the simulator's VPI). Nothing here
// models the block's behaviour; the model does. Widths: Xilinx PG213 for a 128-bit interface.
//
// The model reads the block's inputs and writes its outputs through the VPI, so those signals
// are public (verilator metacomments); the rest of the design stays optimised.
//
// IBUFDS_GTE4 (the reference clock's input buffer) passes its input through: in simulation
// the reference clock is a plain signal.

`timescale 1ns / 1ps

module IBUFDS_GTE4 #(parameter REFCLK_EN_TX_PATH = 1'b0, parameter REFCLK_HROW_CK_SEL = 2'b00,
                     parameter REFCLK_ICNTL_RX = 2'b00) (
  input CEB, input I, input IB, output O, output ODIV2);
  assign O = I;
  assign ODIV2 = I;
endmodule

module pcie_usp (
  output [3:0]   pci_exp_txn,
  output [3:0]   pci_exp_txp,
  input  [3:0]   pci_exp_rxn,
  input  [3:0]   pci_exp_rxp,

  output         user_clk,
  output         user_reset,
  output         user_lnk_up,
  output         phy_rdy_out,

  input          s_axis_rq_tlast /*verilator public_flat_rd*/,
  input  [127:0] s_axis_rq_tdata /*verilator public_flat_rd*/,
  input  [61:0]  s_axis_rq_tuser /*verilator public_flat_rd*/,
  input  [3:0]   s_axis_rq_tkeep /*verilator public_flat_rd*/,
  output         s_axis_rq_tready,
  input          s_axis_rq_tvalid /*verilator public_flat_rd*/,

  output [127:0] m_axis_rc_tdata,
  output [74:0]  m_axis_rc_tuser,
  output         m_axis_rc_tlast,
  output [3:0]   m_axis_rc_tkeep,
  output         m_axis_rc_tvalid,
  input          m_axis_rc_tready /*verilator public_flat_rd*/,

  output [127:0] m_axis_cq_tdata,
  output [87:0]  m_axis_cq_tuser,
  output         m_axis_cq_tlast,
  output [3:0]   m_axis_cq_tkeep,
  output         m_axis_cq_tvalid,
  input          m_axis_cq_tready /*verilator public_flat_rd*/,

  input  [127:0] s_axis_cc_tdata /*verilator public_flat_rd*/,
  input  [32:0]  s_axis_cc_tuser /*verilator public_flat_rd*/,
  input          s_axis_cc_tlast /*verilator public_flat_rd*/,
  input  [3:0]   s_axis_cc_tkeep /*verilator public_flat_rd*/,
  input          s_axis_cc_tvalid /*verilator public_flat_rd*/,
  output         s_axis_cc_tready,

  output [5:0]   pcie_cq_np_req_count,
  input  [1:0]   pcie_cq_np_req /*verilator public_flat_rd*/,
  output [3:0]   pcie_rq_tag_av,

  output         cfg_phy_link_down,
  output [1:0]   cfg_phy_link_status,
  output [2:0]   cfg_negotiated_width,
  output [1:0]   cfg_current_speed,
  output [1:0]   cfg_max_payload,
  output [2:0]   cfg_max_read_req,
  output [15:0]  cfg_function_status,
  output [11:0]  cfg_function_power_state,
  output [503:0] cfg_vf_status,
  output [755:0] cfg_vf_power_state,
  output [1:0]   cfg_link_power_state,
  output         cfg_err_cor_out,
  output         cfg_err_nonfatal_out,
  output         cfg_err_fatal_out,
  output [5:0]   cfg_ltssm_state,
  output [3:0]   cfg_rcb_status,
  output [1:0]   cfg_obff_enable,
  output         cfg_pl_status_change,
  output [3:0]   cfg_tph_requester_enable,
  output [11:0]  cfg_tph_st_mode,
  output [251:0] cfg_vf_tph_requester_enable,
  output [755:0] cfg_vf_tph_st_mode,

  input  [9:0]   cfg_mgmt_addr,
  input          cfg_mgmt_write,
  input  [31:0]  cfg_mgmt_write_data,
  input  [3:0]   cfg_mgmt_byte_enable,
  input          cfg_mgmt_read,
  output [31:0]  cfg_mgmt_read_data,
  output         cfg_mgmt_read_write_done,
  input  [7:0]   cfg_mgmt_function_number,
  input          cfg_mgmt_debug_access,

  output [3:0]   pcie_tfc_nph_av,
  output [3:0]   pcie_tfc_npd_av,

  output         cfg_msg_received,
  output [7:0]   cfg_msg_received_data,
  output [4:0]   cfg_msg_received_type,
  input          cfg_msg_transmit,
  input  [2:0]   cfg_msg_transmit_type,
  input  [31:0]  cfg_msg_transmit_data,
  output         cfg_msg_transmit_done,

  output [7:0]   cfg_fc_ph,
  output [11:0]  cfg_fc_pd,
  output [7:0]   cfg_fc_nph,
  output [11:0]  cfg_fc_npd,
  output [7:0]   cfg_fc_cplh,
  output [11:0]  cfg_fc_cpld,
  input  [2:0]   cfg_fc_sel,

  input          cfg_hot_reset_in,
  output         cfg_hot_reset_out,
  input          cfg_power_state_change_ack,
  output         cfg_power_state_change_interrupt,
  input          cfg_err_cor_in,
  input          cfg_err_uncor_in,
  output [3:0]   cfg_flr_in_process,
  input  [3:0]   cfg_flr_done,
  output [251:0] cfg_vf_flr_in_process,
  input  [7:0]   cfg_vf_flr_done,
  input  [7:0]   cfg_vf_flr_func_num,
  input          cfg_link_training_enable,
  input          cfg_pm_aspm_l1_entry_reject,
  input          cfg_pm_aspm_tx_l0s_entry_disable,
  input          cfg_config_space_enable,
  input          cfg_req_pm_transition_l23_ready,
  input  [63:0]  cfg_dsn,
  input  [7:0]   cfg_ds_bus_number,
  input  [4:0]   cfg_ds_device_number,
  input  [7:0]   cfg_ds_port_number,

  input  [3:0]   cfg_interrupt_int,
  input  [3:0]   cfg_interrupt_pending,
  output         cfg_interrupt_sent,
  output [3:0]   cfg_interrupt_msi_enable,
  input  [31:0]  cfg_interrupt_msi_int /*verilator public_flat_rd*/,
  output         cfg_interrupt_msi_sent,
  output         cfg_interrupt_msi_fail,
  output [11:0]  cfg_interrupt_msi_mmenable,
  output         cfg_interrupt_msi_mask_update,
  output [31:0]  cfg_interrupt_msi_data,
  input  [1:0]   cfg_interrupt_msi_select,
  input  [31:0]  cfg_interrupt_msi_pending_status,
  input  [2:0]   cfg_interrupt_msi_attr,
  input          cfg_interrupt_msi_tph_present,
  input  [1:0]   cfg_interrupt_msi_tph_type,
  input  [7:0]   cfg_interrupt_msi_tph_st_tag,
  input  [1:0]   cfg_interrupt_msi_pending_status_function_num,
  input          cfg_interrupt_msi_pending_status_data_enable,
  input  [7:0]   cfg_interrupt_msi_function_number,

  input          sys_clk,
  input          sys_clk_gt,
  input          sys_reset
);
  // The model's side: variables it writes through the VPI (the block's outputs), named as the
  // ports with a "_m" suffix; the inputs it reads from the ports themselves.
  reg          user_clk_m /*verilator public_flat_rw*/ = 1'b0;
  reg          user_reset_m /*verilator public_flat_rw*/ = 1'b1;
  reg          user_lnk_up_m /*verilator public_flat_rw*/ = 1'b0;
  reg          phy_rdy_out_m /*verilator public_flat_rw*/ = 1'b0;
  reg          s_axis_rq_tready_m /*verilator public_flat_rw*/ = 1'b0;
  reg  [127:0] m_axis_rc_tdata_m /*verilator public_flat_rw*/ = 0;
  reg  [74:0]  m_axis_rc_tuser_m /*verilator public_flat_rw*/ = 0;
  reg          m_axis_rc_tlast_m /*verilator public_flat_rw*/ = 0;
  reg  [3:0]   m_axis_rc_tkeep_m /*verilator public_flat_rw*/ = 0;
  reg          m_axis_rc_tvalid_m /*verilator public_flat_rw*/ = 0;
  reg  [127:0] m_axis_cq_tdata_m /*verilator public_flat_rw*/ = 0;
  reg  [87:0]  m_axis_cq_tuser_m /*verilator public_flat_rw*/ = 0;
  reg          m_axis_cq_tlast_m /*verilator public_flat_rw*/ = 0;
  reg  [3:0]   m_axis_cq_tkeep_m /*verilator public_flat_rw*/ = 0;
  reg          m_axis_cq_tvalid_m /*verilator public_flat_rw*/ = 0;
  reg          s_axis_cc_tready_m /*verilator public_flat_rw*/ = 0;
  reg  [5:0]   pcie_cq_np_req_count_m /*verilator public_flat_rw*/ = 0;
  reg  [3:0]   pcie_rq_tag_av_m /*verilator public_flat_rw*/ = 0;
  reg          cfg_phy_link_down_m /*verilator public_flat_rw*/ = 1'b1;
  reg  [1:0]   cfg_phy_link_status_m /*verilator public_flat_rw*/ = 0;
  reg  [2:0]   cfg_negotiated_width_m /*verilator public_flat_rw*/ = 0;
  reg  [1:0]   cfg_current_speed_m /*verilator public_flat_rw*/ = 0;
  reg  [1:0]   cfg_max_payload_m /*verilator public_flat_rw*/ = 0;
  reg  [2:0]   cfg_max_read_req_m /*verilator public_flat_rw*/ = 0;
  reg  [15:0]  cfg_function_status_m /*verilator public_flat_rw*/ = 0;
  reg  [5:0]   cfg_ltssm_state_m /*verilator public_flat_rw*/ = 0;
  reg  [3:0]   cfg_interrupt_msi_enable_m /*verilator public_flat_rw*/ = 0;
  reg          cfg_interrupt_msi_sent_m /*verilator public_flat_rw*/ = 0;
  reg          cfg_interrupt_msi_fail_m /*verilator public_flat_rw*/ = 0;
  reg  [11:0]  cfg_interrupt_msi_mmenable_m /*verilator public_flat_rw*/ = 0;
  reg          cfg_interrupt_msi_mask_update_m /*verilator public_flat_rw*/ = 0;
  reg  [31:0]  cfg_interrupt_msi_data_m /*verilator public_flat_rw*/ = 0;

  assign user_clk = user_clk_m;
  assign user_reset = user_reset_m;
  assign user_lnk_up = user_lnk_up_m;
  assign phy_rdy_out = phy_rdy_out_m;
  assign s_axis_rq_tready = s_axis_rq_tready_m;
  assign m_axis_rc_tdata = m_axis_rc_tdata_m;
  assign m_axis_rc_tuser = m_axis_rc_tuser_m;
  assign m_axis_rc_tlast = m_axis_rc_tlast_m;
  assign m_axis_rc_tkeep = m_axis_rc_tkeep_m;
  assign m_axis_rc_tvalid = m_axis_rc_tvalid_m;
  assign m_axis_cq_tdata = m_axis_cq_tdata_m;
  assign m_axis_cq_tuser = m_axis_cq_tuser_m;
  assign m_axis_cq_tlast = m_axis_cq_tlast_m;
  assign m_axis_cq_tkeep = m_axis_cq_tkeep_m;
  assign m_axis_cq_tvalid = m_axis_cq_tvalid_m;
  assign s_axis_cc_tready = s_axis_cc_tready_m;
  assign pcie_cq_np_req_count = pcie_cq_np_req_count_m;
  assign pcie_rq_tag_av = pcie_rq_tag_av_m;
  assign cfg_phy_link_down = cfg_phy_link_down_m;
  assign cfg_phy_link_status = cfg_phy_link_status_m;
  assign cfg_negotiated_width = cfg_negotiated_width_m;
  assign cfg_current_speed = cfg_current_speed_m;
  assign cfg_max_payload = cfg_max_payload_m;
  assign cfg_max_read_req = cfg_max_read_req_m;
  assign cfg_function_status = cfg_function_status_m;
  assign cfg_ltssm_state = cfg_ltssm_state_m;
  assign cfg_interrupt_msi_enable = cfg_interrupt_msi_enable_m;
  assign cfg_interrupt_msi_sent = cfg_interrupt_msi_sent_m;
  assign cfg_interrupt_msi_fail = cfg_interrupt_msi_fail_m;
  assign cfg_interrupt_msi_mmenable = cfg_interrupt_msi_mmenable_m;
  assign cfg_interrupt_msi_mask_update = cfg_interrupt_msi_mask_update_m;
  assign cfg_interrupt_msi_data = cfg_interrupt_msi_data_m;

  // Outputs LitePCIe leaves open or that report features it does not use: constant.
  assign pci_exp_txn = 4'b0;
  assign pci_exp_txp = 4'b0;
  assign cfg_function_power_state = 12'b0;
  assign cfg_vf_status = 504'b0;
  assign cfg_vf_power_state = 756'b0;
  assign cfg_link_power_state = 2'b0;
  assign cfg_err_cor_out = 1'b0;
  assign cfg_err_nonfatal_out = 1'b0;
  assign cfg_err_fatal_out = 1'b0;
  assign cfg_rcb_status = 4'b0;
  assign cfg_obff_enable = 2'b0;
  assign cfg_pl_status_change = 1'b0;
  assign cfg_tph_requester_enable = 4'b0;
  assign cfg_tph_st_mode = 12'b0;
  assign cfg_vf_tph_requester_enable = 252'b0;
  assign cfg_vf_tph_st_mode = 756'b0;
  assign cfg_mgmt_read_data = 32'b0;
  assign cfg_mgmt_read_write_done = 1'b0;
  assign pcie_tfc_nph_av = 4'b0;
  assign pcie_tfc_npd_av = 4'b0;
  assign cfg_msg_received = 1'b0;
  assign cfg_msg_received_data = 8'b0;
  assign cfg_msg_received_type = 5'b0;
  assign cfg_msg_transmit_done = 1'b0;
  assign cfg_fc_ph = 8'b0;
  assign cfg_fc_pd = 12'b0;
  assign cfg_fc_nph = 8'b0;
  assign cfg_fc_npd = 12'b0;
  assign cfg_fc_cplh = 8'b0;
  assign cfg_fc_cpld = 12'b0;
  assign cfg_hot_reset_out = 1'b0;
  assign cfg_power_state_change_interrupt = 1'b0;
  assign cfg_flr_in_process = 4'b0;
  assign cfg_vf_flr_in_process = 252'b0;
  assign cfg_interrupt_sent = 1'b0;
endmodule

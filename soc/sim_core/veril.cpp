/* Verilator glue for LiteX's simulator core, without waveform tracing.
 *
 * LiteX's own veril.cpp always builds with --trace, opens sim.vcd and flushes it every
 * 500 cycles even when nothing is traced; measured here that costs ~13 % of simulator speed
 * and makes two simulators sharing one cached build fight over the same file.
 */
#include <signal.h>
#include <stdint.h>
#include "Vsim.h"
#include "verilated.h"

static uint64_t main_time = 0;

extern "C" void litex_sim_eval(void *vsim, uint64_t time_ps)
{
  ((Vsim *)vsim)->eval();
  main_time = time_ps;
}

/* SIGTERM/SIGINT end the simulation loop, so main() returns and exit handlers run (a
 * profiling build writes its profile then). The launcher stops the simulator with SIGTERM. */
static volatile sig_atomic_t stop_requested = 0;

static void on_stop_signal(int sig)
{
  (void)sig;
  stop_requested = 1;
}

extern "C" void litex_sim_init_cmdargs(int argc, char *argv[])
{
  Verilated::commandArgs(argc, argv);
  signal(SIGTERM, on_stop_signal);
  signal(SIGINT, on_stop_signal);
}

extern "C" void litex_sim_init_tracer(void *vsim, long start, long end) {}
extern "C" void litex_sim_tracer_dump() {}

extern "C" int litex_sim_got_finish()
{
  return stop_requested || Verilated::gotFinish();
}

double sc_time_stamp()
{
  return main_time;
}

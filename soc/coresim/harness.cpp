// Core-alone Verilator harness: the Accelerator between behavioural 128-bit native ports (four
// read ports: the read stream's two and the weight stream's two; eight write ports) over one flat
// DRAM array. Each read port returns its data in order after its own latency, drawn per job, so
// the ports' data arrive out of step. Like the DRAM it stands for (16 bytes a cycle), it accepts
// at most one read command a cycle over all the read ports, taking turns among those that ask.
// Reads jobs from stdin, one per line:
//   IN_PATH OUT_PATH PROG SLOTS NSLOTS WATCHDOG STALL_PERCENT SEED MAX_CYCLES
// loads IN_PATH at DRAM offset 0 (the rest zero), runs until done, writes the whole DRAM to
// OUT_PATH and prints "done|hung STATUS ERR_ADDR CYCLES MAC_BUSY DRAM_STALL BYTES_READ BYTES_WRITTEN RETIRED STRAY FSM_STATE".
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <type_traits>
#include <vector>
#include "Vcore.h"
#include "verilated.h"

static const int READ_LATENCY_MIN = 4, READ_LATENCY_SPREAD = 24;

static const int NRD = 4;
// The read ports' signals by index.
#define RD(p, field) (*((p) == 0 ? &top->rd0_##field : (p) == 1 ? &top->rd1_##field \
                       : (p) == 2 ? &top->rd2_##field : &top->rd3_##field))
// And the write ports' (those a core's Params.write_ports leaves unused stay idle).
static const int NWR = 8;
template <typename T> using Port = typename std::remove_reference<T>::type;   // (ports are references)
struct WritePort {
    Port<decltype(Vcore::wr0_cmd_valid)> *cmd_valid, *cmd_ready, *wdata_valid, *wdata_ready;
    Port<decltype(Vcore::wr0_cmd_addr)> *cmd_addr;
    Port<decltype(Vcore::wr0_wdata_data)> *wdata_data;
    Port<decltype(Vcore::wr0_wdata_we)> *wdata_we;
};
#define WRITE_PORT(i) WritePort{&top->wr##i##_cmd_valid, &top->wr##i##_cmd_ready, &top->wr##i##_wdata_valid, \
                                &top->wr##i##_wdata_ready, &top->wr##i##_cmd_addr, &top->wr##i##_wdata_data, \
                                &top->wr##i##_wdata_we}
#define WR(p, field) (*wports[p].field)

struct Rng {
    uint64_t s;
    uint32_t next() { s = s * 6364136223846793005ULL + 1442695040888963407ULL; return (uint32_t)(s >> 33); }
    bool chance(int percent) { return (int)(next() % 100) < percent; }
};

static void set128(VlWide<4>& w, const uint8_t* p) { for (int i = 0; i < 4; i++) { uint32_t v; memcpy(&v, p + 4 * i, 4); w[i] = v; } }
static void get128(const VlWide<4>& w, uint8_t* p) { for (int i = 0; i < 4; i++) { uint32_t v = w[i]; memcpy(p + 4 * i, &v, 4); } }

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    if (argc < 2) { fprintf(stderr, "usage: %s DRAM_BYTES\n", argv[0]); return 2; }
    size_t dram_bytes = strtoull(argv[1], nullptr, 0);
    std::vector<uint8_t> dram(dram_bytes);
    Vcore* top = new Vcore;
    WritePort wports[NWR] = {WRITE_PORT(0), WRITE_PORT(1), WRITE_PORT(2), WRITE_PORT(3),
                             WRITE_PORT(4), WRITE_PORT(5), WRITE_PORT(6), WRITE_PORT(7)};
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        char in_path[1024], out_path[1024];
        unsigned long prog, slots, nslots, watchdog, stall, seed, max_cycles;
        if (sscanf(line, "%1023s %1023s %lu %lu %lu %lu %lu %lu %lu", in_path, out_path, &prog, &slots, &nslots,
                   &watchdog, &stall, &seed, &max_cycles) != 9) { fprintf(stderr, "bad job line\n"); return 2; }
        std::fill(dram.begin(), dram.end(), 0);
        FILE* f = fopen(in_path, "rb");
        if (!f) { perror(in_path); return 2; }
        size_t got = fread(dram.data(), 1, dram_bytes, f);
        (void)got;
        fclose(f);
        Rng rng{seed * 2654435761ULL + 1};
        // Reset.
        top->sys_rst = 1; top->sys_clk = 0; top->eval();
        for (int i = 0; i < 4; i++) { top->sys_clk = 1; top->eval(); top->sys_clk = 0; top->eval(); }
        top->sys_rst = 0;
        top->prog = prog; top->slots = slots; top->nslots = nslots; top->watchdog = watchdog; top->start = 0;
        for (int p = 0; p < NRD; p++) { RD(p, cmd_ready) = 0; RD(p, rdata_valid) = 0; }
        for (int p = 0; p < NWR; p++) { WR(p, cmd_ready) = 0; WR(p, wdata_ready) = 0; }
        std::deque<std::pair<uint64_t, uint64_t>> reads[NRD];   // per read port: (ready cycle, beat)
        uint64_t latency[NRD];
        for (int p = 0; p < NRD; p++) latency[p] = READ_LATENCY_MIN + rng.next() % READ_LATENCY_SPREAD;
        int turn = 0;                                           // the read port served first
        std::deque<uint64_t> writes[NWR];                     // per write port: beats commanded
        uint64_t cycle = 0, limit = max_cycles;
        bool started = false, bad = false;
        // LT_CORESIM_TRACE=FILE appends "cycle state attn_state read_commands" whenever the
        // sequencer's or the attention unit's FSM changes state (profiling): the read commands
        // accepted so far tell how busy the DRAM was in each state.
        const char *trace_path = getenv("LT_CORESIM_TRACE");
        FILE *trace = trace_path ? fopen(trace_path, "a") : nullptr;
        int last_state = -1, last_attn = -1;
        uint64_t read_commands = 0;
        while (cycle < limit) {
            // Drive this cycle's inputs.
            top->start = (cycle == 2);
            bool rvalid[NRD], rd_cmd[NRD], rd_data[NRD];
            uint64_t rd_addr[NRD];
            for (int p = 0; p < NRD; p++) {
                RD(p, cmd_ready) = 0;
                rvalid[p] = !reads[p].empty() && reads[p].front().first <= cycle;
                RD(p, rdata_valid) = rvalid[p];
                if (rvalid[p]) {
                    uint64_t beat = reads[p].front().second;
                    if ((beat + 1) * 16 <= dram_bytes) set128(RD(p, rdata_data), &dram[beat * 16]);
                    else { static const uint8_t z[16] = {0}; set128(RD(p, rdata_data), z); bad = true; }
                }
            }
            for (int p = 0; p < NWR; p++) {
                WR(p, cmd_ready) = !rng.chance(stall);
                WR(p, wdata_ready) = !rng.chance(stall);
            }
            top->eval();
            // One read command a cycle: the first port from ``turn`` on that asks (a command's
            // valid does not depend on its ready), unless this cycle stalls.
            for (int k = 0; k < NRD; k++) {
                int p = (turn + k) % NRD;
                if (RD(p, cmd_valid)) {
                    RD(p, cmd_ready) = !rng.chance(stall);
                    turn = (p + 1) % NRD;
                    top->eval();
                    break;
                }
            }
            for (int p = 0; p < NRD; p++) {
                rd_cmd[p] = RD(p, cmd_valid) && RD(p, cmd_ready);
                rd_addr[p] = RD(p, cmd_addr);
                rd_data[p] = rvalid[p] && RD(p, rdata_ready);
            }
            bool wr_cmd[NWR], wr_data[NWR];
            uint64_t wr_addr[NWR];
            uint8_t wbuf[NWR][16];
            unsigned wmask[NWR];
            for (int p = 0; p < NWR; p++) {
                wr_cmd[p] = WR(p, cmd_valid) && WR(p, cmd_ready);
                wr_addr[p] = WR(p, cmd_addr);
                wr_data[p] = WR(p, wdata_valid) && WR(p, wdata_ready);
                if (wr_data[p]) { get128(WR(p, wdata_data), wbuf[p]); wmask[p] = WR(p, wdata_we); }
            }
            top->sys_clk = 1; top->eval(); top->sys_clk = 0; top->eval();
            cycle++;
            for (int p = 0; p < NRD; p++) {
                if (rd_cmd[p]) { reads[p].push_back({cycle + latency[p], rd_addr[p]}); read_commands++; }
                if (rd_data[p]) reads[p].pop_front();
            }
            for (int p = 0; p < NWR; p++) {
                if (wr_cmd[p]) writes[p].push_back(wr_addr[p]);
                if (wr_data[p]) {
                    if (writes[p].empty()) { fprintf(stderr, "wdata without command\n"); return 3; }
                    uint64_t beat = writes[p].front(); writes[p].pop_front();
                    if ((beat + 1) * 16 <= dram_bytes) {
                        for (int b = 0; b < 16; b++)          // the byte enables
                            if (wmask[p] >> b & 1) dram[beat * 16 + b] = wbuf[p][b];
                    } else bad = true;
                }
            }
            if (trace && (top->fsm_state != last_state || top->attn_state != last_attn)) {
                last_state = top->fsm_state;
                last_attn = top->attn_state;
                fprintf(trace, "%llu %d %d %llu\n", (unsigned long long)cycle, last_state, last_attn,
                        (unsigned long long)read_commands);
            }
            if (top->busy) started = true;
            if (started && top->done) break;
        }
        if (trace) fclose(trace);
        f = fopen(out_path, "wb");
        if (!f) { perror(out_path); return 2; }
        fwrite(dram.data(), 1, dram_bytes, f);
        fclose(f);
        printf("%s %u %u %llu %llu %llu %llu %llu %u %d %u\n", cycle < limit ? "done" : "hung",
               (unsigned)top->status, (unsigned)top->err_addr,
               (unsigned long long)top->cycles, (unsigned long long)top->mac_busy,
               (unsigned long long)top->dram_stall, (unsigned long long)top->bytes_read,
               (unsigned long long)top->bytes_written, (unsigned)top->retired, bad ? 1 : 0, (unsigned)top->fsm_state);
        fflush(stdout);
    }
    delete top;
    return 0;
}

// LiteTransformer decode loop: greedy generation on the transformer core, driven by the SoC's CPU.
//
// The host leaves a request (the "mailbox") at the top of DRAM and types 'g' on the console; the
// firmware runs one program per position, feeds each ARGMAX back as the next token and prints it
// as soon as it is known. See README.md for the mailbox layout and the console protocol.

#include <stdint.h>
#include <stdio.h>

#include <irq.h>
#include <system.h>
#include <libbase/uart.h>

#include <generated/csr.h>
#include <generated/mem.h>
#include <generated/soc.h>
#include <generated/litetransformer_isa.h>

#ifndef FIRMWARE_ID
#define FIRMWARE_ID "dev"
#endif

#define MAILBOX_MAGIC   0x424d544c      /* "LTMB" */
#define MAILBOX_VERSION 1
#define BOS 1
#define EOS 2

/* Written by the host (driver/firmware.py pack_mailbox); little-endian 32-bit words. */
struct mailbox {
	uint32_t magic;
	uint32_t version;
	uint32_t prog;          /* DRAM byte addresses, as the core sees them (0 = first DRAM byte) */
	uint32_t slots;
	uint32_t argmax;
	uint32_t kv_base;
	uint32_t steps;         /* total positions, prompt included (llama2.c's -n) */
	uint32_t n_prompt;      /* prompt tokens, BOS first */
	uint32_t watchdog;      /* core cycles per run before it stops with TIMEOUT; 0 = never */
	uint32_t reserved[7];
	uint32_t prompt[];
};

/* linker.ld: the last MAILBOX_BYTES of main_ram. */
extern struct mailbox _mailbox;
extern char _mailbox_end[];

/*-----------------------------------------------------------------------*/
/* DRAM shared with the core                                             */
/*-----------------------------------------------------------------------*/

static volatile uint32_t *dram_word(uint32_t dram_addr)
{
	return (volatile uint32_t *)(MAIN_RAM_BASE + dram_addr);
}

/* The core and the host's DMA reach DRAM through their own LiteDRAM ports; the CPU goes
 * through its data cache (write-through) and, if a board adds one, LiteX's write-back L2 (ours
 * have none: LiteTransformerSoC.add_sdram). Called before the core reads what the CPU wrote and
 * before the CPU reads what the others wrote: drop the L1's lines, then flush an L2 if there is
 * one (flush_l2_cache reads 2x its size; without CONFIG_L2_SIZE it does nothing). */
static void sync_with_dram(void)
{
	flush_cpu_dcache();
	flush_l2_cache();
}

/*-----------------------------------------------------------------------*/
/* One position                                                          */
/*-----------------------------------------------------------------------*/

/* Run the program on one slot (token, pos); return the ARGMAX index, or -1 after printing the
 * core's error as "E <code> <address>". */
static int32_t run_position(const struct mailbox *mb, uint32_t token, uint32_t pos, uint64_t *cycles)
{
	volatile uint32_t *slot = dram_word(mb->slots);
	uint32_t status, code;

	slot[0] = token;
	slot[1] = pos;
	slot[2] = mb->kv_base;
	slot[3] = 0;
	sync_with_dram();

	accel_prog_write(mb->prog);
	accel_slots_write(mb->slots);
	accel_nslots_write(1);
	accel_watchdog_write(mb->watchdog);
	accel_control_write(1);
	do {
		status = accel_status_read();
	} while ((status & (1 << LT_STATUS_BUSY_OFFSET)) || !(status & (1 << LT_STATUS_DONE_OFFSET)));
	*cycles += accel_cycles_read();

	code = (status >> LT_STATUS_ERROR_OFFSET) & ((1 << LT_STATUS_ERROR_SIZE) - 1);
	if (code != LT_ERROR_NONE) {
		printf("E %lu 0x%08lx\n", (unsigned long)code, (unsigned long)accel_err_addr_read());
		return -1;
	}
	sync_with_dram();
	return dram_word(mb->argmax)[0];
}

/*-----------------------------------------------------------------------*/
/* One request                                                           */
/*-----------------------------------------------------------------------*/

static int mailbox_ok(const struct mailbox *mb)
{
	uint32_t room = (_mailbox_end - (char *)mb->prompt) / sizeof(uint32_t);

	return mb->magic == MAILBOX_MAGIC && mb->version == MAILBOX_VERSION &&
	       mb->n_prompt >= 1 && mb->n_prompt <= room && mb->n_prompt <= mb->steps;
}

static void print_cycles(uint64_t cycles)
{
	/* Hex halves: the integer printf may lack long long. */
	printf(" 0x%08lx%08lx", (unsigned long)(cycles >> 32), (unsigned long)cycles);
}

/* llama2.c's loop, greedy: prompt tokens are fed in order (their outputs unused); after the
 * prompt each ARGMAX is the next token, printed as "T <id>". Stops at BOS or EOS (not printed)
 * or after `steps` positions; ends with "S <positions> <prefill cycles> <decode cycles> <stop>". */
static void generate(void)
{
	const struct mailbox *mb = &_mailbox;
	uint64_t cycles[2] = {0, 0};            /* prompt positions, generated positions */
	const char *stop = "steps";
	uint32_t pos = 0, token;
	int32_t next;

	sync_with_dram();                       /* the host wrote the mailbox behind the caches */
	if (!mailbox_ok(mb)) {
		printf("E mailbox\n");
		return;
	}
	token = mb->prompt[0];
	while (pos < mb->steps) {
		next = run_position(mb, token, pos, &cycles[pos >= mb->n_prompt]);
		if (next < 0)
			return;
		pos++;
		if (pos < mb->n_prompt) {
			token = mb->prompt[pos];
			continue;
		}
		if (next == BOS || next == EOS) {
			stop = next == BOS ? "bos" : "eos";
			break;
		}
		printf("T %ld\n", (long)next);
		token = next;
	}
	printf("S %lu", (unsigned long)pos);
	print_cycles(cycles[0]);
	print_cycles(cycles[1]);
	printf(" %s\n", stop);
}

/*-----------------------------------------------------------------------*/
/* Console                                                               */
/*-----------------------------------------------------------------------*/

static void prompt(void)
{
	printf("\nltfw> ");
}

int main(void)
{
#ifdef CONFIG_CPU_HAS_INTERRUPT
	irq_setmask(0);
	irq_setie(1);
#endif
	uart_init();

	printf("\nLiteTransformer firmware %s\n", FIRMWARE_ID);
	prompt();
	while (1) {
		switch (getchar()) {
		case 'g':
			printf("\n");
			generate();
			prompt();
			break;
		case 'v':
			printf("\nV %s", FIRMWARE_ID);
			prompt();
			break;
		case '\r':
		case '\n':
			prompt();
			break;
		default:
			break;
		}
	}
	return 0;
}

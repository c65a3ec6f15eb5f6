"""The core's register word layouts: what the gateware packs and the driver and firmware unpack.

``config``, ``config2`` and ``config3`` are read-only words that say which spec.isa.Params a
core was built with, so the driver compiles for the core it finds; ``status`` is the run state.
Each word is a list of fields (name, lsb, width). A Params field is stored as its log2 where
it must be a power of two, so that 8 bits hold any legal size. CSR *addresses* are LiteX's
(csr.csv); only the bits inside a word are declared here.

A field added later reads 0 on a core built before it, so every field's 0 decodes to the
smallest core's value (no instruction buffer, two scratchpad ports, one write port, ...).
"""

from spec import isa

STATUS = [
    ("busy",  0, 1),
    ("done",  1, 1),           # finished, cleanly or with an error
    ("error", 8, 8),           # spec.isa.ERRORS code; 0 = none
]

CONFIG = [
    ("slots",          0, 8),
    ("log2_act_depth", 8, 8),
    ("log2_max_cols", 16, 8),
    ("log2_max_seq",  24, 8),
]

CONFIG2 = [
    ("log2_max_head",         0, 8),
    ("log2_mac_lanes",        8, 8),
    ("log2_read_fifo_depth", 16, 8),
    ("read_ports",           24, 4),
    ("log2_element_units",   28, 4),
]

CONFIG3 = [
    ("fetch_beats",          0, 9),     # 0: no instruction buffer
    ("weight_ports",         9, 2),
    ("log2_write_ports",    11, 2),
    ("act_read_ports_m2",   16, 8),     # act_read_ports - 2
    ("write_stats",         24, 1),
    ("divider_steps_ge2",   25, 1),     # divider_steps is 1, 2 or 4: these two bits
    ("fast_exponent",       26, 1),
    ("attn_overlap",        27, 1),
    ("attn_pairs",          28, 1),
    ("divider_steps_eq4",   29, 1),
    ("kv_int8",             30, 1),     # Params.kv_format "int8"
    ("mac_beats_m1",        31, 1),     # mac_beats - 1
]

LAYOUTS = {"status": STATUS, "config": CONFIG, "config2": CONFIG2, "config3": CONFIG3}


def _log2(v):
    if v < 1 or v & (v - 1):
        raise ValueError(f"registers: {v} is not a power of two")
    return v.bit_length() - 1


def pack(layout, **values):
    """The word holding ``values`` (field name -> int) in ``layout``; every field named once."""
    names = {name for name, _, _ in layout}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"registers: no field {sorted(unknown)} in this word")
    word = 0
    for name, lsb, width in layout:
        v = int(values.get(name, 0))
        if not 0 <= v < 1 << width:
            raise ValueError(f"registers: {name} = {v} does not fit {width} bits")
        word |= v << lsb
    return word


def unpack(layout, word):
    """Field name -> int of ``word`` in ``layout``."""
    return {name: (word >> lsb) & ((1 << width) - 1) for name, lsb, width in layout}


def config_fields(p):
    """Params -> {word name: {field: value}} for config, config2 and config3."""
    return {
        "config": dict(slots=p.slots, log2_act_depth=_log2(p.act_depth), log2_max_cols=_log2(p.max_cols),
                       log2_max_seq=_log2(p.max_seq)),
        "config2": dict(log2_max_head=_log2(p.max_head), log2_mac_lanes=_log2(p.mac_lanes),
                        log2_read_fifo_depth=_log2(p.read_fifo_depth), read_ports=p.read_ports,
                        log2_element_units=_log2(p.element_units)),
        "config3": dict(fetch_beats=p.fetch_beats, act_read_ports_m2=p.act_read_ports - 2,
                        write_stats=p.write_stats, divider_steps_ge2=p.divider_steps >= 2,
                        fast_exponent=p.fast_exponent, attn_overlap=p.attn_overlap, attn_pairs=p.attn_pairs,
                        divider_steps_eq4=p.divider_steps == 4, log2_write_ports=_log2(p.write_ports),
                        mac_beats_m1=p.mac_beats - 1, weight_ports=p.weight_ports,
                        kv_int8=p.kv_format == "int8"),
    }


def config_words(p):
    """Params -> (config, config2, config3), the words a core built with ``p`` reads."""
    fields = config_fields(p)
    return tuple(pack(LAYOUTS[name], **fields[name]) for name in ("config", "config2", "config3"))


def params_from_config(config, config2, config3):
    """The Params a core reports in its three config words (config_words' inverse)."""
    c, c2, c3 = unpack(CONFIG, config), unpack(CONFIG2, config2), unpack(CONFIG3, config3)
    return isa.Params(slots=c["slots"], act_depth=1 << c["log2_act_depth"], max_cols=1 << c["log2_max_cols"],
                      max_seq=1 << c["log2_max_seq"], max_head=1 << c2["log2_max_head"],
                      mac_lanes=1 << c2["log2_mac_lanes"], read_fifo_depth=1 << c2["log2_read_fifo_depth"],
                      read_ports=c2["read_ports"], element_units=1 << c2["log2_element_units"],
                      fetch_beats=c3["fetch_beats"], act_read_ports=2 + c3["act_read_ports_m2"],
                      write_stats=bool(c3["write_stats"]),
                      divider_steps=4 if c3["divider_steps_eq4"] else 1 + c3["divider_steps_ge2"],
                      fast_exponent=bool(c3["fast_exponent"]), attn_overlap=bool(c3["attn_overlap"]),
                      attn_pairs=bool(c3["attn_pairs"]), write_ports=1 << c3["log2_write_ports"],
                      mac_beats=1 + c3["mac_beats_m1"], weight_ports=c3["weight_ports"],
                      kv_format="int8" if c3["kv_int8"] else "int16")


def c_header_lines():
    """#defines of every field's offset and size, for firmware (LT_<WORD>_<FIELD>_OFFSET/_SIZE)."""
    return [f"#define LT_{word.upper()}_{name.upper()}_{what} {v}"
            for word, layout in LAYOUTS.items() for name, lsb, width in layout
            for what, v in (("OFFSET", lsb), ("SIZE", width))]


def spec_contents():
    return {word: [list(f) for f in layout] for word, layout in LAYOUTS.items()}

"""spec.registers: the config words round-trip every legal Params, the layouts do not overlap,
and the gateware's CSRs reset to exactly the words the driver decodes."""

import pytest
from hypothesis import given, settings, strategies as st

from spec import isa, registers

pow2 = lambda lo, hi: st.sampled_from([1 << k for k in range(lo.bit_length() - 1, hi.bit_length())])


@st.composite
def params(draw):
    slots = draw(pow2(1, 16))
    arp = draw(st.sampled_from([2, 4]))
    overlap = draw(st.booleans())
    return isa.Params(
        slots=slots, act_depth=draw(pow2(256, 65536)), max_cols=draw(pow2(16, 65536)),
        max_seq=draw(pow2(8, 65536)), max_head=draw(pow2(8, 1024)), mac_lanes=draw(pow2(2, 16)),
        read_fifo_depth=draw(pow2(16, 4096)), read_ports=draw(st.sampled_from([1, 2])),
        write_ports=draw(st.sampled_from([1, 2, isa.WRITE_PORTS_PER_BANK])),
        element_units=draw(st.sampled_from([u for u in (1, 2, 4, 8, 16) if u <= slots])),
        act_read_ports=arp, write_stats=draw(st.booleans()), divider_steps=draw(st.sampled_from([1, 2, 4])),
        fast_exponent=draw(st.booleans()), attn_overlap=overlap,
        attn_pairs=draw(st.booleans()) and overlap and arp == 4,
        fetch_beats=draw(st.sampled_from([0, 2, 4, 8, 16, 32, 64, 128, 256])),
        kv_format=draw(st.sampled_from(isa.KV_FORMATS)) if arp == 4 else "int16").validate()


@settings(max_examples=300, deadline=None)
@given(params())
def test_config_words_round_trip_every_legal_params(p):
    words = registers.config_words(p)
    assert all(0 <= w < 1 << 32 for w in words)
    assert registers.params_from_config(*words) == p


@settings(max_examples=100, deadline=None)
@given(params())
def test_build_constants_round_trip_every_legal_params(p):
    # What a build's CSR map holds (ACCEL_PARAM_*): integers only, back to the same Params.
    values = isa.params_constants(p)
    assert all(type(v) is int for v in values.values())
    assert isa.params_from_constants(values) == p


@pytest.mark.parametrize("target", list(isa.TARGET_PARAMS))
def test_config_words_round_trip_the_targets(target):
    p = isa.TARGET_PARAMS[target]
    assert registers.params_from_config(*registers.config_words(p)) == p


@pytest.mark.parametrize("word", list(registers.LAYOUTS))
def test_fields_fit_the_word_and_do_not_overlap(word):
    used = 0
    for name, lsb, width in registers.LAYOUTS[word]:
        bits = ((1 << width) - 1) << lsb
        assert width >= 1 and lsb + width <= 32, name
        assert not used & bits, f"{word}.{name} overlaps another field"
        used |= bits


def test_the_smallest_core_reads_zero_in_config3():
    """A field added to config3 reads 0 on an older core: 0 must decode to the smallest core."""
    p = registers.params_from_config(*registers.config_words(isa.Params(slots=1))[:2], 0)
    assert (p.fetch_beats, p.act_read_ports, p.write_stats, p.divider_steps, p.attn_pairs,
            p.write_ports, p.kv_format) == (0, 2, False, 1, False, 1, "int16")


@given(st.sampled_from(registers.STATUS), st.integers(0, (1 << 32) - 1))
def test_pack_refuses_values_that_do_not_fit(field, value):
    name, _, width = field
    if value < 1 << width:
        assert registers.unpack(registers.STATUS, registers.pack(registers.STATUS, **{name: value}))[name] == value
    else:
        with pytest.raises(ValueError, match="does not fit"):
            registers.pack(registers.STATUS, **{name: value})


def test_pack_refuses_a_field_the_word_has_not():
    with pytest.raises(ValueError, match="no field"):
        registers.pack(registers.STATUS, bussy=1)


def test_c_header_has_every_field():
    h = isa.c_header()
    for word, layout in registers.LAYOUTS.items():
        for name, lsb, width in layout:
            assert f"#define LT_{word.upper()}_{name.upper()}_OFFSET {lsb}\n" in h
            assert f"#define LT_{word.upper()}_{name.upper()}_SIZE {width}\n" in h


@pytest.mark.parametrize("target", list(isa.TARGET_PARAMS))
def test_gateware_csrs_reset_to_the_spec_words(target):
    """The words the core's CSRs hold are the ones the driver decodes (elaborated, not simulated)."""
    pytest.importorskip("migen")
    from litedram.common import LiteDRAMNativePort
    from gateware.accelerator import Accelerator
    p = isa.TARGET_PARAMS[target]
    rps = [LiteDRAMNativePort("read", address_width=20, data_width=128) for _ in range(p.read_ports)]
    wps = [LiteDRAMNativePort("write", address_width=20, data_width=128) for _ in range(p.write_ports)]
    wts = [LiteDRAMNativePort("read", address_width=20, data_width=128) for _ in range(p.weight_ports)]
    core = Accelerator(rps, wps, dram_size=1 << 20, params=p, bank_shift=2,
                       weight_ports=wts)
    words = tuple(getattr(core, name).status.reset.value for name in ("config", "config2", "config3"))
    assert registers.params_from_config(*words) == p
    assert [(f.name, f.offset, f.size) for f in core.status.fields.fields] == registers.STATUS

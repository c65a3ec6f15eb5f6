"""The on-disk caches check their entries' SHA-256 before use."""

import os

from driver.cache import load_pickle, manifest_problem, store_pickle, write_manifest


def test_a_manifest_names_the_file_that_changed(tmp_path):
    (tmp_path / "obj").mkdir()
    (tmp_path / "obj" / "Vsim").write_bytes(b"\x7fELF binary")
    (tmp_path / "csr.csv").write_text("csr_register,x,0x0,1,rw\n")
    write_manifest(str(tmp_path), [os.path.join("obj", "Vsim"), "csr.csv"])
    assert manifest_problem(str(tmp_path)) is None
    (tmp_path / "csr.csv").write_text("csr_register,x,0x4,1,rw\n")
    assert manifest_problem(str(tmp_path)) == "csr.csv differs from the SHA-256 recorded when it was built"
    (tmp_path / "obj" / "Vsim").unlink()
    assert manifest_problem(str(tmp_path)) == f"{os.path.join('obj', 'Vsim')} is missing"
    (tmp_path / "manifest.sha256").unlink()
    assert manifest_problem(str(tmp_path)) == "it has no manifest"


def test_a_damaged_pickle_is_discarded_with_one_line(tmp_path):
    path = str(tmp_path / "entry.pkl")
    store_pickle(path, {"image": bytes(range(256)) * 4})
    assert load_pickle(path)["image"][:3] == b"\x00\x01\x02"
    blob = bytearray(open(path, "rb").read())
    blob[200] ^= 0x40                     # inside the pickled bytes: it would still load
    open(path, "wb").write(bytes(blob))
    lines = []
    assert load_pickle(path, notice=lines.append) is None
    assert len(lines) == 1 and "recorded SHA-256" in lines[0] and not os.path.exists(path)
    assert load_pickle(path) is None      # no entry: a miss, silently

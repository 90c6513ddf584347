"""The ``vitsq.json`` manifest covers itself and names only hashed files inside the artifact.

A real artifact (the tiny Vosk fixture exported as a ``vosk-dir`` folder) is tampered field by
field. A plain edit breaks ``manifest_sha256``; an edit that also recomputes it (so the content
hash cannot catch it) must still be refused by the path rules. The untouched artifact loads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import vitsq
from vitsq.errors import ModelLoadError
from vitsq.manifest import FORMAT_VERSION, HASH_FIELD, MANIFEST, manifest_digest, verify_manifest, write_manifest

TEXT = "привет, мир"
ZERO = dict(noise_scale=0.0, noise_w=0.0)


@pytest.fixture(scope="module")
def vosk_dir(tmp_path_factory, vosk_tiny):
    """The tiny Vosk checkpoint as a ``vosk-dir`` artifact (model.onnx, config.json, dictionary)."""
    from vitsq.export.onnx import export_vosk_dir

    return export_vosk_dir(vosk_tiny, tmp_path_factory.mktemp("art") / "vosk")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, vosk_dir, vosk_tiny):
    """A kind ``onnx`` artifact naming its graph with ``model_file`` (as ``quantize_ort`` writes it)."""
    out = tmp_path_factory.mktemp("art") / "onnx"
    out.mkdir()
    shutil.copyfile(vosk_dir / "model.onnx", out / "graph.onnx")
    write_manifest(out, "onnx", config=vosk_tiny.config, files=["graph.onnx"], flavor="vosk",
                   model_file="graph.onnx")
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(folder: Path, change, rehash: bool) -> None:
    """Apply ``change(manifest)``; with ``rehash`` also recompute manifest_sha256 as a forger would."""
    path = folder / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    if rehash:
        manifest[HASH_FIELD] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")


def _set_sample_rate(m):
    m["sample_rate"] = m["config"]["sample_rate"] = 44100


def _swap_phoneme(m):
    ids = m["config"]["phoneme_id_map"]
    a, b = sorted(k for k in ids if k.isalpha())[:2]
    ids[a], ids[b] = ids[b], ids[a]


def _rename_listed(new_name):
    def change(m):
        m["files"][new_name] = m["files"].pop("config.json")
    return change


def test_manifest_is_canonical_hashed_and_written_atomically(vosk_dir):
    text = (vosk_dir / MANIFEST).read_text(encoding="utf-8")
    manifest = json.loads(text)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest[HASH_FIELD] == manifest_digest(manifest)
    # the digest does not depend on formatting, only on content
    assert manifest_digest(json.loads(json.dumps(manifest))) == manifest[HASH_FIELD]
    assert set(manifest["files"]) == {"model.onnx", "config.json", "dictionary"}
    assert sorted(p.name for p in vosk_dir.iterdir()) == sorted([*manifest["files"], MANIFEST])  # no temp left
    verify_manifest(vosk_dir, manifest)


def test_untouched_artifacts_load_and_match_the_model(vosk_dir, onnx_dir, vosk_tiny):
    ref = vosk_tiny.synthesize(TEXT, speaker=1, **ZERO).samples
    for folder in (vosk_dir, onnx_dir):
        loaded = vitsq.load(folder, backend="onnx")
        assert loaded.sample_rate == 22050
        np.testing.assert_allclose(loaded.synthesize(TEXT, speaker=1, **ZERO).samples, ref, atol=1e-4)


@pytest.mark.parametrize("change", [
    _set_sample_rate,
    _swap_phoneme,
    lambda m: m.update(model_file="/etc/passwd"),
    lambda m: m.update(model_file="../outside.onnx"),
    lambda m: m["source"].update(name="someone else"),
    lambda m: m.pop("quantization"),
    _rename_listed("../x"),
], ids=["sample_rate", "phoneme_map", "model_file_abs", "model_file_dotdot", "source", "dropped_field", "files_dotdot"])
def test_edited_manifest_is_refused(vosk_dir, tmp_path, change):
    bad = _copy(vosk_dir, tmp_path / "bad")
    _edit(bad, change, rehash=False)
    with pytest.raises(ModelLoadError, match=r"bad: vitsq\.json was modified.*re-create"):
        vitsq.load(bad, backend="onnx")


def test_manifest_without_its_hash_is_refused(vosk_dir, tmp_path):
    bad = _copy(vosk_dir, tmp_path / "old")
    _edit(bad, lambda m: m.pop(HASH_FIELD), rehash=False)
    with pytest.raises(ModelLoadError, match="has no manifest_sha256.*re-create"):
        vitsq.load(bad, backend="onnx")
    _edit(bad, lambda m: m.update(format_version=FORMAT_VERSION + 1), rehash=False)
    with pytest.raises(ModelLoadError, match="format_version 2 is not supported.*re-create"):
        vitsq.load(bad, backend="onnx")


def test_file_names_outside_the_folder_are_refused_even_with_a_recomputed_hash(onnx_dir, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(onnx_dir / "graph.onnx", outside)
    meta = json.loads((onnx_dir / MANIFEST).read_text())["files"]["graph.onnx"]
    cases = {
        "model_file_outside": (lambda m: m.update(model_file="../outside.onnx"), "model_file='../outside.onnx' names a file not listed"),
        "model_file_unlisted": (lambda m: m.update(model_file="other.onnx"), "names a file not listed"),
        "files_dotdot": (lambda m: m["files"].update({"../outside.onnx": meta}), r"'\.\./outside\.onnx' leaves"),
        "files_absolute": (lambda m: m["files"].update({str(outside): meta}), "is an absolute path"),
        "files_backslash": (lambda m: m["files"].update({"..\\outside.onnx": meta}), "not a plain relative path"),
        "files_manifest": (lambda m: m["files"].update({MANIFEST: meta}), "is the manifest itself"),
        "nested_file_field": (lambda m: m.update(extra={"programs": [{"file": "/etc/hostname"}]}),
                              r"extra\.programs\[0\]\.file='/etc/hostname' names a file not listed"),
    }
    for name, (change, why) in cases.items():
        bad = _copy(onnx_dir, tmp_path / name)
        _edit(bad, change, rehash=True)
        with pytest.raises(ModelLoadError, match=f"{name}: vitsq\\.json was modified.*{why}.*re-create"):
            vitsq.load(bad, backend="onnx")


def test_symlink_leaving_the_folder_is_refused(onnx_dir, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(onnx_dir / "graph.onnx", outside)
    bad = _copy(onnx_dir, tmp_path / "linked")
    (bad / "graph.onnx").unlink()
    os.symlink(outside, bad / "graph.onnx")  # same bytes, same hash: only the location is wrong
    with pytest.raises(ModelLoadError, match="link to .*outside the artifact folder"):
        vitsq.load(bad, backend="onnx")
    # a link that stays inside the folder is a file of the artifact like any other
    inside = _copy(onnx_dir, tmp_path / "inside")
    (inside / "graph.onnx").rename(inside / "real.onnx")
    os.symlink("real.onnx", inside / "graph.onnx")
    vitsq.load(inside, backend="onnx")


def test_tampered_listed_file_and_unlisted_dictionary(vosk_dir, onnx_dir, tmp_path):
    bad = _copy(vosk_dir, tmp_path / "cfg")
    (bad / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="config.json does not match the hash.*tampered"):
        vitsq.load(bad, backend="onnx")
    # a dictionary dropped into a folder whose manifest does not list it is not read
    extra = _copy(onnx_dir, tmp_path / "dict")
    (extra / "dictionary").write_text("привет 1.0 a0 a0 a0 a0\nмир 1.0 o1 o1\n", encoding="utf-8")
    loaded = vitsq.load(extra, backend="onnx")
    np.testing.assert_array_equal(loaded.text_to_ids(TEXT)[0], vitsq.load(onnx_dir, backend="onnx").text_to_ids(TEXT)[0])


def test_writer_refuses_names_outside_the_folder(tmp_path, vosk_tiny):
    (tmp_path / "a.bin").write_bytes(b"x")
    for files, extra, why in (
        (["../a.bin"], {}, "leaves or re-enters"),
        ([str(tmp_path / "a.bin")], {}, "absolute path"),
        (["a.bin"], {"model_file": "b.bin"}, "not in files"),
    ):
        with pytest.raises(ValueError, match=why):
            write_manifest(tmp_path, "onnx", config=vosk_tiny.config, files=files, **extra)
    assert not (tmp_path / MANIFEST).exists()

"""``DIR/best``: the winning recipe of a search as a preset that ``vitsq quantize MODEL --recipe
DIR/best`` rebuilds exactly.

``DIR/best/preset.json`` holds the recipe (``to_dict``), the calibration (size, seed, and the
SHA-256 of the calibration set it produced), the thread count the artifact was calibrated with,
the model it was tuned for (name and source hash), and the SHA-256 of every artifact file the
winning trial built. Rebuilding runs the same code as a trial (:func:`build_artifact`) with the
same threads and then compares the file hashes: identical files on the same kind of CPU and the
same library versions (float reductions may round differently on another CPU).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vitsq.errors import InputError

log = logging.getLogger(__name__)

PRESET_FILE = "preset.json"
PRESET_SCHEMA = "vitsq-tune-preset/1"


def build_artifact(synth: Any, recipe: Any, calib: int | None, calib_seed: int, out: Path, *,
                   force: bool = False) -> dict[str, Any]:
    """Calibrate (first ``calib`` sentences of the calibration split, noise seed ``calib_seed``,
    the model's scales), quantize ``synth`` with ``recipe`` and save the artifact folder ``out``.

    Returns ``{"artifact": {"files": {name: sha256}, "bytes": n}, "calibration": dict | None,
    "calibration_sentences": set}``.
    """
    from vitsq.quantize.calibration import make_calibration
    from vitsq.quantize.dispatch import quantize
    from vitsq.quantize.recipes import EagerRecipe, PT2ERecipe

    cal = None if calib is None else make_calibration(synth, n=calib, seed=calib_seed, recipe=recipe)
    options = {"progress": False} if isinstance(recipe, (EagerRecipe, PT2ERecipe)) else {}
    q = quantize(synth, recipe, cal, **options)
    q.save(out, force=force)
    manifest = json.loads((Path(out) / "vitsq.json").read_text(encoding="utf-8"))
    files = {name: info["sha256"] for name, info in sorted(manifest["files"].items())}
    return {"artifact": {"files": files, "bytes": sum(int(i["bytes"]) for i in manifest["files"].values())},
            "calibration": cal.to_dict() if cal is not None else None,
            "calibration_sentences": set(cal.sentences) if cal is not None else set()}


def model_identity(synth: Any) -> dict[str, Any]:
    """Name and source-file hash of the model (what a preset was tuned for)."""
    from vitsq.manifest import source_info

    info = source_info(synth)
    return {"name": info.get("name"), "sha256": info.get("sha256")}


def preset_dict(trial: dict[str, Any], model: dict[str, Any], calib_seed: int, gate: str, objective: str) -> dict:
    """The ``preset.json`` content for a finished trial record."""
    cand = trial["candidate"]
    return {"schema": PRESET_SCHEMA, "recipe": cand["recipe"], "calib": cand["calib"], "calib_seed": calib_seed,
            "threads": cand["threads"], "model": model, "artifact": trial["artifact"],
            "trial": {"index": trial["index"], "key": trial["key"], "label": cand["label"]},
            "metrics": trial.get("metrics"), "timing": trial.get("timing"), "gate": gate, "objective": objective}


def write_preset(directory: Path, preset: dict[str, Any]) -> Path:
    """Write ``directory/preset.json`` atomically (replacing the one an earlier run wrote)."""
    from vitsq.outputs import write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return write_text(directory / PRESET_FILE, json.dumps(preset, indent=2), suffixes=(".json",), force=True,
                      what="tuned preset")


def preset_path(value: str | Path) -> Path | None:
    """The ``preset.json`` that ``--recipe VALUE`` names (a folder holding one, or the file), or
    None when VALUE is not a path (a recipe name). A path without a preset is an error."""
    from vitsq.quantize.recipes import RECIPES

    if str(value) in RECIPES:  # a recipe name, even where a folder of that name exists
        return None
    p = Path(value).expanduser()
    if p.is_dir():
        if (p / PRESET_FILE).is_file():
            return p / PRESET_FILE
        raise InputError(f"--recipe {value}: folder has no {PRESET_FILE} (a `vitsq tune` output's best/ folder has one)")
    if p.is_file():
        if p.name == PRESET_FILE:
            return p
        raise InputError(f"--recipe {value}: not a recipe name nor a `vitsq tune` preset ({PRESET_FILE})")
    if "/" in str(value) or "\\" in str(value):
        raise InputError(f"--recipe {value}: no such folder (give a recipe name or a `vitsq tune` DIR/best folder)")
    return None


def read_preset(path: Path) -> dict[str, Any]:
    """Read and check a ``preset.json``."""
    from vitsq.quantize.recipes import recipe_from_dict

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read tuned preset {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != PRESET_SCHEMA:
        raise InputError(f"{path} is not a vitsq tune preset (schema {PRESET_SCHEMA!r})")
    missing = [k for k in ("recipe", "calib", "calib_seed", "threads", "model", "artifact") if k not in data]
    if missing:
        raise InputError(f"tuned preset {path} lacks {', '.join(missing)}: re-run `vitsq tune`")
    recipe_from_dict(data["recipe"])  # an unknown/old recipe version is refused here, by name
    return data


def rebuild(synth: Any, preset: dict[str, Any], out: Path, *, force: bool = False) -> dict[str, Any]:
    """Rebuild a preset's artifact into ``out`` with its recipe, calibration and threads.

    Refuses a model other than the one the preset was tuned for; returns :func:`build_artifact`'s
    dict plus ``reproduced`` (every file hash equal to the tuned trial's).
    """
    import torch

    from vitsq.quantize.recipes import recipe_from_dict

    want, have = preset["model"], model_identity(synth)
    if want.get("sha256") and have.get("sha256") and want["sha256"] != have["sha256"]:
        raise InputError(f"this preset was tuned for {want.get('name')} (source sha256 {want['sha256'][:12]}...), "
                         f"not {have.get('name')} ({have['sha256'][:12]}...): tune this model, or quantize with a "
                         "recipe name")
    previous = torch.get_num_threads()
    torch.set_num_threads(int(preset["threads"]))  # calibration sums depend on the thread split
    try:
        built = build_artifact(synth, recipe_from_dict(preset["recipe"]), preset["calib"], int(preset["calib_seed"]),
                               out, force=force)
    finally:
        torch.set_num_threads(previous)
    built["reproduced"] = built["artifact"]["files"] == preset["artifact"]["files"]
    if not built["reproduced"]:
        log.warning("the rebuilt artifact differs from the tuned trial's (another CPU or library version?)")
    return built


#: ``vitsq quantize`` options that would change what a preset means.
_RECIPE_OPTIONS = (("engine", None), ("per_channel", False), ("observer", None), ("calibrate_method", None),
                   ("calib", None), ("calib_file", None), ("keep_float", "preset"), ("budget", None),
                   ("sensitivity", False), ("seed", None), ("noise_scale", None), ("length_scale", None),
                   ("noise_w", None))


def cmd_quantize_preset(args: Any, path: Path) -> int:
    """``vitsq quantize MODEL --recipe DIR/best -o OUT``: rebuild a tuned preset's artifact."""
    from vitsq.outputs import check_output
    from vitsq.registry import load

    changed = [name for name, default in _RECIPE_OPTIONS if getattr(args, name, default) != default]
    if changed:
        raise InputError(f"--recipe {args.recipe} is a tuned preset and is rebuilt exactly: drop "
                         + ", ".join("--" + c.replace("_", "-") for c in changed))
    preset = read_preset(path)
    check_output(args.output, kind="dir", force=args.force, what="artifact folder")
    kw = {"config_path": Path(args.config)} if args.config else {}
    synth = load(args.model, backend="torch", device="cpu", **kw)
    built = rebuild(synth, preset, Path(args.output), force=args.force)
    summary = {"out_dir": str(args.output), "recipe": preset["recipe"]["recipe"], "recipe_dict": preset["recipe"],
               "size_bytes": built["artifact"]["bytes"], "files": built["artifact"]["files"],
               "reproduced": built["reproduced"], "preset": str(path)}
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {args.output}  recipe {summary['recipe']} (tuned preset {path.parent})  size "
          f"{summary['size_bytes'] / 1e6:.2f} MB  "
          + ("identical to the tuned trial's artifact" if built["reproduced"]
             else "WARNING: differs from the tuned trial's artifact (another CPU or library version?)"))
    return 0

"""The run dir: resuming a run in its own dir, and never writing over another run.

- `python train.py resume=DIR` continues the run in DIR with DIR's own config (the
  `.hydra/config.yaml` it was started with, plus the value overrides of every resume, e.g.
  `trainer.max_epochs=20`) from `DIR/checkpoints/last.ckpt`. Hydra's run dir follows
  `resume` (the `thawkit_run_dir` resolver in src/thawkit/conf/hydra/default.yaml), so logs,
  TensorBoard
  events and checkpoints continue there; the resume's own Hydra record goes to
  `DIR/.hydra/resumed-<time>/`, leaving the original untouched.
- `ckpt_path=last` resumes from the run dir's own `checkpoints/last.ckpt` (with a fixed
  `hydra.run.dir`, or with `resume`); `ckpt_path=PATH` resumes from that file with the config
  given on the command line, in the run dir that holds PATH.
- A new run (no `resume`, no `ckpt_path` in its own dir) refuses a dir that already holds a
  run's checkpoints or summary.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from thawkit.config import legacy

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
RESUMED_PREFIX = "resumed-"
# Keys of the command line that steer the resume itself, not the run's config.
_RESUME_KEYS = ("resume", "ckpt_path")


class RunDirError(RuntimeError):
    """The run dir cannot be used as asked (it holds another run, or has nothing to resume)."""


def _given(value: object) -> bool:
    return value not in (None, "", "null", "None")


def _run_of_checkpoint(ckpt_path: object) -> str | None:
    """The run dir that holds `ckpt_path` (`<run>/checkpoints/<file>`), if it is one."""
    if not _given(ckpt_path) or str(ckpt_path) == "last":
        return None
    path = Path(str(ckpt_path))
    return str(path.parent.parent) if path.parent.name == CHECKPOINTS else None


def run_dir(resume: object, ckpt_path: object, default: str) -> str:
    """Hydra's run dir: `resume`, else the run that holds `ckpt_path`, else `default`."""
    if _given(resume):
        return str(resume)
    return _run_of_checkpoint(ckpt_path) or default


def hydra_subdir(resume: object, ckpt_path: object, stamp: str) -> str:
    """Where Hydra records this invocation: `.hydra`, or `.hydra/resumed-<stamp>` on a resume."""
    if _given(resume) or _run_of_checkpoint(ckpt_path):
        return f".hydra/{RESUMED_PREFIX}{stamp}"
    return ".hydra"


# Used by src/thawkit/conf/hydra/default.yaml. Registered on import: the training entry
# (thawkit.run.entry, which imports this module) is imported before Hydra composes the config.
OmegaConf.register_new_resolver("thawkit_run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("thawkit_hydra_subdir", hydra_subdir, replace=True)


def holds_run(path: Path) -> list[str]:
    """What in `path` shows that a run already wrote there (checkpoints, summary.json)."""
    found = sorted(str(p.relative_to(path)) for p in (path / CHECKPOINTS).glob("*.ckpt"))
    if (path / "summary.json").is_file():
        found.append("summary.json")
    return found


def _recent_runs_with_last(limit: int = 3) -> list[str]:
    runs = sorted(
        Path("outputs").glob(f"*/*/{CHECKPOINTS}/{LAST}"), key=lambda p: p.stat().st_mtime
    )
    return [str(p.parent.parent) for p in runs[-limit:][::-1]]


def prepare_run_dir(cfg: DictConfig) -> DictConfig:
    """Resolve `resume` and `ckpt_path` into a checkpoint file, and guard the run dir.

    Returns the config with `ckpt_path` an existing file (or None) and `paths.output_dir` the
    resumed run's dir. Raises `RunDirError` when there is nothing to resume, or when a new run
    would write into a dir that holds another run.
    """
    resume, ckpt = cfg.get("resume"), cfg.get("ckpt_path")
    out = Path(cfg.paths.output_dir)
    if _given(resume):
        rdir = Path(str(resume))
        if not rdir.is_dir():
            raise RunDirError(f"resume={resume}: no such run dir")
        if out.resolve() != rdir.resolve():
            out = rdir
        if not _given(ckpt):
            ckpt = "last"
    if _given(ckpt) and str(ckpt) == "last":
        last = out / CHECKPOINTS / LAST
        if not last.is_file():
            recent = _recent_runs_with_last()
            hint = f" Runs with a last.ckpt: {recent}." if recent else ""
            raise RunDirError(
                f"ckpt_path=last: there is no {last} to resume (the run stopped before its "
                "first checkpoint, or this is a new run dir). Continue an earlier run with "
                f"resume=<its run dir>.{hint}"
            )
        ckpt = last
    elif _given(ckpt):
        if not Path(str(ckpt)).is_file():
            raise RunDirError(f"ckpt_path={ckpt}: no such checkpoint file")
    else:
        ckpt = None
    held = holds_run(out)
    resuming_here = ckpt is not None and Path(str(ckpt)).resolve().is_relative_to(out.resolve())
    if held and not resuming_here:
        raise RunDirError(
            f"{out} already holds a run ({', '.join(held[:4])}); a new run never overwrites "
            f"another. Continue it with resume={out}, or start elsewhere "
            "(the default run dir is new for every run; hydra.run.dir=<new dir>)."
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.ckpt_path = str(ckpt) if ckpt is not None else None
    return cfg


def resumed_config(cfg: DictConfig) -> DictConfig:
    """`python train.py resume=DIR`: DIR's own config plus the overrides of every resume.

    The config DIR was started with (`DIR/.hydra/config.yaml`) is the base; the value overrides
    of each resume so far (`DIR/.hydra/resumed-*/overrides.yaml`, this one included) apply on
    top, so `trainer.max_epochs=20` given at one resume holds for later ones too. Choosing
    another config group option (`strategy=full`) on a resume is an error: that is a new run.
    Without `resume` (or outside Hydra) `cfg` is returned as it is.
    """
    resume = cfg.get("resume")
    if not _given(resume) or not HydraConfig.initialized():
        return cfg
    rdir = Path(str(resume))
    saved_path = rdir / ".hydra" / "config.yaml"
    if not saved_path.is_file():
        raise RunDirError(
            f"resume={resume}: {saved_path} is missing, so the run's config is unknown. "
            "Resume with the run's own overrides and ckpt_path=<its checkpoint> instead."
        )
    saved = legacy.upgrade(OmegaConf.load(saved_path))
    hydra_file = rdir / ".hydra" / "hydra.yaml"
    saved_choices = OmegaConf.load(hydra_file).hydra.runtime.choices if hydra_file.is_file() else {}
    current = HydraConfig.get()
    groups = set(current.runtime.choices)
    history = sorted((rdir / ".hydra").glob(f"{RESUMED_PREFIX}*/overrides.yaml"))
    lines = [line for f in history for line in OmegaConf.load(f)]
    if not any(
        f.parent == Path(current.runtime.output_dir) / current.output_subdir for f in history
    ):
        lines += list(current.overrides.task)  # outside the usual layout: this command's own
    for override in OverridesParser.create().parse_overrides([str(x) for x in lines]):
        key = override.key_or_group
        if key in _RESUME_KEYS or key.startswith("hydra"):
            continue
        if key in groups:
            was = saved_choices.get(key)
            if str(override.value()) != str(was):
                raise RunDirError(
                    f"{key}={override.value()} differs from the run's {key}={was}: a resumed "
                    "run keeps its config. Start a new run for another choice."
                )
            continue
        if override.is_delete():
            raise RunDirError(f"~{key}: keys cannot be removed on a resume")
        OmegaConf.update(saved, key, override.value(), merge=False, force_add=True)
    with open_dict(saved):
        # Options added since the run started (a top-level key its config lacks, e.g. `tune`,
        # `swa`, `distill`) take today's defaults, which leave a started run's training as it was.
        for key in cfg:
            if key not in saved:
                saved[key] = cfg._get_node(key)
        saved.resume = str(rdir)
        saved.ckpt_path = cfg.get("ckpt_path")
    log.info("Resuming %s with its own config (%s)", rdir, saved_path)
    return saved


def check_checkpoint_fits(
    ckpt_path: str, num_classes: int, class_names: list[str], backbone: str
) -> None:
    """A resumed checkpoint must have been trained on the same classes with the same backbone."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    hp = ckpt.get("hyper_parameters", {})
    if hp.get("backbone", backbone) != backbone:
        raise RunDirError(
            f"{ckpt_path} was trained with backbone {hp['backbone']}, this run has {backbone}. "
            "Resume with the run's own config (resume=<run dir>)."
        )
    names = list(hp.get("class_names") or [])
    if hp.get("num_classes", num_classes) != num_classes or (names and names != class_names):
        raise RunDirError(
            f"{ckpt_path} was trained on {hp.get('num_classes')} classes {names[:10]}, the data "
            f"has {num_classes} classes {class_names[:10]}. ckpt_path resumes a run on its own "
            "data; to fine-tune this checkpoint on other classes, start a new run with "
            f"model.weights={ckpt_path} model.reset_head=true."
        )

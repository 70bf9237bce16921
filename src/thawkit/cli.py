"""The `thawkit` command: `thawkit train|evaluate|predict|export|serve|audit|report|cache|soup`.

`thawkit train strategy=gradual`, `thawkit train -m strategy=full,gradual`,
`thawkit predict ckpt=... input=...` take the same Hydra overrides as the root scripts
(`python train.py ...`, which call this module), with the configs shipped in the package
(`thawkit.CONF_DIR`), so they work from any folder. `thawkit report PATH` writes and prints the
report of a sweep (thawkit.reporting.sweep_report); `thawkit cache show|clear` shows or empties
the persistent cache (thawkit.data.disk_cache); `thawkit soup SWEEP_DIR` averages a sweep's runs
(thawkit.run.soup).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig

from thawkit import CONF_DIR, __version__
from thawkit.config.overrides import check_command_line
from thawkit.config.quoting import check_quoting
from thawkit.console import quiet_lightning

# Subcommand -> (the function it runs, its config in CONF_DIR (None: not a Hydra command), help).
COMMANDS: dict[str, tuple[str, str | None, str]] = {
    "train": ("thawkit.run.entry:main", "train", "fine-tune a backbone on an image folder"),
    "evaluate": ("thawkit.inference.evaluate:main", "evaluate", "evaluate a checkpoint"),
    "predict": ("thawkit.inference.predict:main", "predict", "predict classes of images"),
    "export": (
        "thawkit.inference.export:main",
        "export",
        "export to ONNX (int8 too) or TorchScript",
    ),
    "serve": (
        "thawkit.inference.serve:main",
        "serve",
        "try a checkpoint in the browser (local page)",
    ),
    "audit": ("thawkit.audit.command:main", "audit", "audit an image folder: leakage, labels"),
    "report": ("thawkit.reporting.sweep_report:main", None, "report on a sweep or runs: PATH"),
    "cache": ("thawkit.data.disk_cache:main", None, "show or clear the persistent cache"),
    "soup": ("thawkit.run.soup:main", None, "average a sweep's runs (model soups): SWEEP_DIR"),
}


def usage() -> str:
    """The text of `thawkit --help`."""
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return (
        "usage: thawkit COMMAND [OVERRIDES...]\n\n"
        f"commands:\n{rows}\n\n"
        "Overrides are Hydra's, as for `python train.py`: thawkit train strategy=gradual,\n"
        "thawkit train -m strategy=full,gradual, thawkit predict ckpt=PATH input=IMAGES,\n"
        "thawkit report multirun/DATE/TIME, thawkit soup multirun/DATE/TIME.\n"
        "`thawkit COMMAND --help` lists a command's config.\n"
    )


def _load(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run_hydra(name: str, args: Sequence[str]) -> None:
    """Run subcommand `name` as a Hydra app on `args` (overrides and Hydra flags)."""
    target, config_name, _ = COMMANDS[name]
    check_quoting(args)  # a hint where Hydra's lexer gives none (non-ASCII values)
    run = _load(target)  # imported first: it registers the resolvers its config uses
    # A mistyped key gets "did you mean" (Hydra would advise adding it with +).
    check_command_line(config_name, args)
    argv = list(sys.argv)

    def task(cfg: DictConfig) -> Any:
        # Lightning's DDP launcher starts ranks 1..N-1 by re-running this command line: it must
        # be the one the user typed (with the subcommand), not the one Hydra parsed.
        sys.argv = argv
        quiet_lightning()
        value = run(cfg)
        return value if name == "train" else None  # a sweeper optimises train's return value

    # Hydra names the job, and the run dir's log file (train.log), after this (without it, after
    # the module holding `task`). Last, as argparse takes the overrides in one piece; not after
    # --info, whose value is optional; not when the command line names the job itself.
    named = any(a in ("--info", "-i") or a.startswith("hydra.job.name=") for a in args)
    sys.argv = [argv[0], *args, *([] if named else [f"hydra.job.name={name}"])]
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)()
    finally:
        sys.argv = argv


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: `thawkit COMMAND [ARGS...]` (`argv` defaults to `sys.argv[1:]`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    if args[0] == "--version":
        print(f"thawkit {__version__}")
        return
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"thawkit: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    target, config_name, _ = COMMANDS[name]
    if config_name is None:
        _load(target)(rest)
        return
    run_hydra(name, rest)


if __name__ == "__main__":
    main()

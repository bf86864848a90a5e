"""Unknown config-group options (``norm=btach``) refused in one line naming the accepted ones.

Hydra's own answer to them spans a dozen lines with its config search path and exit code 1. This
check reads the same command line with Hydra's own parsers before Hydra starts, and takes the
options of each group from the config directory, so it knows every option a user can add.
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from normbench.errors import ConfigError

#: flags after which Hydra does something other than composing this config: left to Hydra
_NOT_COMPOSING = {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--config-path", "-cp"}
_NOT_COMPOSING |= {"--info", "-i", "--experimental-rerun"}


def group_options(config_dirs: list[Path]) -> dict[str, list[str]]:
    """``{"norm": ["batch", ...], ...}``: the option files of every config group under the dirs."""
    groups: dict[str, set[str]] = {}
    for config_dir in config_dirs:
        for option in config_dir.rglob("*.yaml"):
            relative = option.relative_to(config_dir)
            if len(relative.parts) > 1:
                groups.setdefault(relative.parent.as_posix(), set()).add(relative.stem)
    return {group: sorted(options) for group, options in groups.items()}


def _chosen(override: Override) -> list[str]:
    """The options an override selects: one, or each of a choice sweep (``norm=batch,layer``)."""
    if override.is_choice_sweep():
        return list(override.sweep_string_iterator())
    if override.is_sweep_override():  # glob/range sweeps: Hydra checks them
        return []
    value = override.value()
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if v is not None]


def parse_command_line(argv: list[str]) -> tuple[Namespace, list[Override]] | None:
    """Hydra's own reading of a command line that composes this config (its arguments and overrides), or
    None for anything this cannot read for sure (malformed overrides, extra search paths, other commands):
    that is left to Hydra, which reports it itself."""
    if any(arg.split("=")[0] in _NOT_COMPOSING for arg in argv):
        return None
    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, _ = parser.parse_known_args(argv)
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:  # noqa: BLE001  (Hydra gives its own message for a malformed command line)
        return None
    if any(o.key_or_group.startswith("hydra.searchpath") for o in overrides):
        return None
    return args, overrides


def check_group_choices(argv: list[str], config_dir: Path) -> None:
    """Raise `ConfigError` for a command-line override that selects an option a config group lacks."""
    parsed = parse_command_line(argv)
    if parsed is None:
        return
    args, overrides = parsed
    options = group_options([config_dir] + ([Path(args.config_dir)] if args.config_dir else []))
    for override in overrides:
        group = override.key_or_group
        if group not in options or group.startswith("hydra") or override.is_delete() or override.package:
            continue
        for chosen in _chosen(override):
            if chosen not in options[group]:
                raise ConfigError(f"{group}={chosen} is unknown; accepted: {', '.join(options[group])}")

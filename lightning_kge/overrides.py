"""Labels given on the command line (``predict head=… relation=…``, ``plot relation=…``): taken as typed.

Hydra's override grammar reads some values as something other than text: ``null`` or ``NULL``
as null, ``1.50`` as the float 1.5, ``true`` as a bool, ``a,b`` as a sweep, ``[a,b]`` as a list,
``${…}`` as an interpolation, and it cannot read ``#rel``, ``a=b``, ``a${b``, ``$\\frac{$`` or
non-ASCII text such as ``café`` at all. Quoted (``head="'#rel'"``: single quotes for Hydra, inside
double quotes for the shell) every label is text. Here:

- numbers and bools are taken as typed (``head=1.50`` is the label ``1.50``);
- ``${…}`` is never resolved: a label is text;
- a value Hydra read as null, a list or a sweep, and a value Hydra cannot read at all (checked
  before Hydra parses the command line, by :func:`checked_command_line`), stop with one line
  saying what Hydra made of it and how to quote it.
"""

from __future__ import annotations

import functools
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from lightning_kge.errors import UserError, reports_user_errors


def hydra_quoted(key: str, text: str) -> str:
    """The override ``key=text`` quoted so that Hydra reads ``text`` as a string, quoted for a shell.

    Example:
        >>> print(hydra_quoted("relation", "#rel"))
        relation="'#rel'"
        >>> print(hydra_quoted("head", "it's"))
        head="'it\\'s'"
        >>> print(hydra_quoted("head", "$x"))
        'head='"'"'$x'"'"''
    """
    escaped = re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), text)
    override = f"{key}='{escaped}'"
    if any(c in text for c in '"$`\\!'):
        return shlex.quote(override)
    return f"{key}=\"'{escaped}'\""


def typed(key: str) -> str | None:
    """The text after ``key=`` on the command line (in Hydra's overrides), or ``None``."""
    if not HydraConfig.initialized():
        return None
    for override in HydraConfig.get().overrides.task:
        name, _, text = override.partition("=")
        if name.lstrip("+~") == key:
            return text
    return None


def label_value(cfg: DictConfig, key: str) -> str | None:
    """The label given as ``key``: the text as typed, never interpolated; ``None`` if none was given.

    Raises:
        UserError: Hydra read the value as null, a list or a mapping (saying how to quote it).
    """
    value = OmegaConf.to_container(cfg, resolve=False).get(key)
    if isinstance(value, str):
        return value
    text = typed(key)
    if value is None:
        if text is None:
            return None
        raise UserError(f"Hydra read {key}={text} as null, not as a label", f"config key {key}",
                        f"to give the label {text}, quote it: {hydra_quoted(key, text)}")
    if isinstance(value, (list, dict)):
        shown = text if text is not None else str(value)
        raise UserError(f"Hydra read {key}={shown} as a {'list' if isinstance(value, list) else 'mapping'}, "
                        "not as a label", f"config key {key}",
                        f"to give the label {shown}, quote it: {hydra_quoted(key, shown)}")
    return text if text is not None else str(value)  # a number or a bool: as typed


def check_overrides(arguments: Sequence[str], keys: Sequence[str]) -> None:
    """Refuse a command-line label (``key=…`` for ``key`` in ``keys``) that Hydra would misread or fail on.

    Raises:
        UserError: Hydra's grammar cannot read it (``#rel``, ``a=b``, ``café``) or reads it as a
            sweep (``a,b``); the message shows how to quote it.
    """
    parser = OverridesParser.create()
    for argument in arguments:
        name, equals, text = argument.partition("=")
        if not equals or name.lstrip("+~") not in keys:
            continue
        key = name.lstrip("+~")
        try:
            [override] = parser.parse_overrides([argument])
        except OverrideParseException:
            raise UserError(f"Hydra's override grammar cannot read {argument}", "command line",
                            f"quote the label: {hydra_quoted(key, text)}") from None
        if override.is_sweep_override():
            raise UserError(f"Hydra reads {argument} as a sweep over several values, not as one label",
                            "command line", f"quote the label: {hydra_quoted(key, text)}")


def checked_command_line(keys: Sequence[str]) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorate a Hydra entry point: :func:`check_overrides` on ``sys.argv`` first (one-line errors)."""

    def decorate(hydra_main: Callable[[], Any]) -> Callable[[], Any]:
        @reports_user_errors
        def check() -> None:
            check_overrides(sys.argv[1:], keys)

        @functools.wraps(hydra_main)
        def main() -> Any:
            check()
            return hydra_main()

        return main

    return decorate

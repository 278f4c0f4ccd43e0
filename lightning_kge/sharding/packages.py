"""TorchRec and FBGEMM: which set matches the installed torch, and a one-line error where they are missing.

They are not an extra of ``pyproject.toml``: FBGEMM's compiled ops are built against one torch minor
version (any other pair fails at ``import fbgemm_gpu`` with an undefined symbol), and torchrec's metadata
pins ``torchmetrics==1.0.3`` and pulls the CUDA ``fbgemm-gpu``. ``scripts/install-torchrec.sh`` installs
the set of :data:`PACKAGE_SETS` that matches the installed torch, with ``--no-deps``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lightning_kge.errors import UserError

INSTALL_SCRIPT = "scripts/install-torchrec.sh"
"""The documented install command (in a source checkout of lightning_kge)."""

PACKAGE_SETS: dict[tuple[str, str], tuple[str, str]] = {
    ("2.13", "cpu"): ("fbgemm-gpu-cpu==1.8.0", "torchrec==1.8.0"),
    ("2.13", "cuda"): ("fbgemm-gpu==1.8.0", "torchrec==1.8.0"),
    ("2.14", "cpu"): ("fbgemm-gpu-cpu==1.9.0", "torchrec==1.9.2"),
    ("2.14", "cuda"): ("fbgemm-gpu==1.9.0", "torchrec==1.9.2"),
}
"""``(torch minor version, cpu|cuda)`` -> the FBGEMM and TorchRec pins built for it (the script's table)."""

DEPENDENCIES = ("tensordict", "tqdm", "pyre-extensions")
"""What torchrec imports for sharding and training, installed normally after torchrec ``--no-deps``."""


def package_set(torch_version: str, cuda: str | None) -> tuple[str, str] | None:
    """The ``(fbgemm, torchrec)`` pins for a torch version (``2.13.0+cpu``) and CUDA version (``None`` on CPU).

    Example:
        >>> package_set("2.13.0+cpu", None)
        ('fbgemm-gpu-cpu==1.8.0', 'torchrec==1.8.0')
        >>> package_set("2.14.1", "12.8")
        ('fbgemm-gpu==1.9.0', 'torchrec==1.9.2')
        >>> package_set("2.9.0", None) is None
        True
    """
    minor = ".".join(torch_version.split("+")[0].split(".")[:2])
    return PACKAGE_SETS.get((minor, "cpu" if cuda is None else "cuda"))


def install_command() -> str:
    """The command that installs the packages for the torch installed here (the script, and what it runs).

    Example:
        >>> install_command().startswith("bash scripts/install-torchrec.sh")
        True
    """
    import torch

    found = package_set(torch.__version__, torch.version.cuda)
    if found is None:
        return (f"bash {INSTALL_SCRIPT} (it needs torch 2.13 or 2.14; this is torch {torch.__version__}: "
                "pip install torch==2.13.0 first)")
    fbgemm, torchrec = found
    return (f"bash {INSTALL_SCRIPT} (that is: pip install --no-deps {fbgemm} {torchrec} && "
            f"pip install {' '.join(DEPENDENCIES)})")


def require_torchrec(user: str = "strategy=torchrec", where: str = "config key trainer.strategy") -> ModuleType:
    """Import ``torchrec`` (and ``fbgemm_gpu``, whose ops it needs), or raise one :class:`UserError` naming the
    install command.

    A set built for another torch fails at import with an undefined symbol (``OSError`` or
    ``ImportError``): that is reported the same way, with the error's first line.
    """
    for name in ("fbgemm_gpu", "torchrec"):
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError) as error:
            reason = "is not installed" if isinstance(error, ModuleNotFoundError) else (
                f"does not load ({type(error).__name__}: {str(error).splitlines()[0][:120]}), so it was built for "
                "another torch")
            raise UserError(f"{user} needs the package {name}, which {reason}", where, install_command()) from None
    return module

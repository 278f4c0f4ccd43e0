"""Rerun every bad input, config error and fault of issues 12 and 20 through the real entry points.

Writes the table of ``docs/reliability.md``: for each case, the command, its exit status and the
message it gives (paths shown as ``$DIR``, the case's own folder). Each case runs in a fresh
folder on tiny data with ``trainer=cpu``.

    python scripts/reliability.py              # every case; writes docs/reliability.md
    python scripts/reliability.py --list       # the case names
    python scripts/reliability.py NAME ...     # some cases, printed only

The download cases need the countries_S1 files in ``../shared/data`` (beside the checkout), the
full-disk cases root and a tmpfs they can mount; without them their rows say so. ``tests/test_reliability.py`` checks that the table lists
exactly these cases and reruns the fast ones.
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
NATIONS = REPO / "lightning_kge" / "data" / "bundled" / "nations"
COUNTRIES = next((p / "shared" / "data" / "countries_S1" for p in REPO.parents
                  if (p / "shared" / "data" / "countries_S1").is_dir()), REPO.parent / "shared" / "data" / "countries_S1")
"""The real countries_S1 files (``shared/data`` beside the checkout or a folder above it), for the download cases."""
QUIET = ["trainer=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
COMMON = {"train": ["model.dim=8", "sampler.num_negatives=8", *QUIET], "evaluate": QUIET}
"""Arguments every command of that entry point gets first (a case's own come after, so they win)."""
GRAPH = ["data=tsv", "data.path=$DIR/graph", "trainer.fast_dev_run=true"]
TRAIN = ["data=nations", "trainer.max_steps=4", "trainer.check_val_every_n_epoch=1"]
CKPT = "$DIR/run/checkpoints/last.ckpt"
ERROR = r"^(error: .*)$"
WARNING = r"^(error: .*|\S+\.py:\d+: (\S+: .*))$"
"""An error, or a warning of ours about the data (``<code>.py:LINE: <file or folder>: <what>``)."""


@dataclass
class Case:
    """One row of the table.

    Attributes:
        name: what is tried.
        args: ``python -m lightning_kge.<args>``; ``$DIR`` is the case's folder.
        setup: prepares files in the case's folder.
        pick: a regex over stderr lines; its first group (or match) of the first matching line is
            the message shown (``(no message)`` when none matches).
        env: extra environment variables (``$DIR`` expanded; ``PYTHONPATH`` gets ``scripts/``).
        then: a second command run after the first (its status and message are shown after it).
        fast: part of the subset the tests rerun.
        needs: a path that must exist, else the row says it was skipped.
        disk: ``(size, free)``: a tmpfs of ``size`` bytes is mounted at ``$DIR/disk`` after the
            setup and filled but for ``free`` bytes (``None``: not filled); without root or
            tmpfs the row says it was skipped.
        after: what it left, said after the message (``$DIR`` is the case's folder).
    """

    name: str
    args: list[str]
    setup: Callable[[Path], None] | None = None
    pick: str = ERROR
    env: dict[str, str] = field(default_factory=dict)
    then: list[str] | None = None
    fast: bool = False
    needs: Path | None = None
    disk: tuple[int, int | None] | None = None
    after: Callable[[Path], str] | None = None

    def command(self) -> str:
        """The command as the table shows it: ``…`` stands for the entry point's :data:`COMMON` arguments."""
        line = shown_command(self.args)
        if self.then:
            line += f" ; {shown_command(self.then)}"
        return " ".join([*(f"{k}={v}" for k, v in self.env.items()), line])


def shown_command(args: list[str]) -> str:
    """``python -m lightning_kge.<entry> … <args>`` as typed in a shell (``…``: the :data:`COMMON` arguments)."""
    common = " …" if args[0] in COMMON else ""
    return " ".join([f"python -m lightning_kge.{args[0]}{common}", *map(shell_word, args[1:])])


def shell_word(arg: str) -> str:
    """``arg`` as typed in a POSIX shell: ``key="'#x'"`` for Hydra's quotes, shell quotes where needed."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    if "$DIR" not in arg and any(c in arg for c in "'\"$`\\!&;|<>() \t*?"):
        return shlex.quote(arg)
    return arg


# --- setups -----------------------------------------------------------------------------------------

def graph(edit: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """Copy nations to ``$DIR/graph``, then ``edit`` that folder."""

    def setup(folder: Path) -> None:
        shutil.copytree(NATIONS, folder / "graph")
        if edit is not None:
            edit(folder / "graph")

    return setup


def rewrite(split: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / f"{split}.txt"
        path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
    return edit


def raw(split: str, data: bytes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / f"{split}.txt").write_bytes(data)
    return edit


def as_folder(split: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / f"{split}.txt").unlink()
        (folder / f"{split}.txt").mkdir()
    return edit


def trained(folder: Path) -> None:
    """A finished small nations run in ``$DIR/run`` (for the checkpoint cases)."""
    run(["train", *TRAIN, f"hydra.run.dir={folder / 'run'}"], folder, {})


def checkpoint_bytes(data: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        trained(folder)
        path = folder / "run" / "checkpoints" / "last.ckpt"
        path.write_bytes(data(path.read_bytes()))
    return setup


def odd_labels(folder: Path) -> None:
    """A small run in ``$DIR/run`` on nations with labels that readers, Hydra and matplotlib read specially."""
    graph(lambda g: [rewrite(split, lambda t: rename(t, ODD))(g) for split in ("train", "valid", "test")])(folder)
    run(["train", *TRAIN, "data=tsv", "data.path=$DIR/graph", f"hydra.run.dir={folder / 'run'}"], folder, {})


def rename(text: str, names: dict[str, str]) -> str:
    return "".join("\t".join(names.get(cell, cell) for cell in line.split("\t")) + "\n" for line in text.splitlines())


def exported_labels(folder: Path) -> str:
    """What ``$DIR/emb/entities.tsv`` holds: its lines, and whether they read back to the labels."""
    from lightning_kge.escaping import read_tsv

    path = folder / "emb" / "entities.tsv"
    if not path.is_file():
        return "no entities.tsv"
    labels = {label for _, label in read_tsv(path)}
    lines = len(path.read_text(encoding="utf-8").splitlines())
    return (f"entities.tsv: {lines} lines (str.splitlines) for {len(labels)} entities; "
            f"{'all' if set(ODD.values()) - set(RELATION_ODD) <= labels else 'not all'} odd labels read back")


def count_test_rows(folder: Path) -> str:
    """How many rows of ``$DIR/run/csv/metrics.csv`` hold test metrics."""
    with open(folder / "run" / "csv" / "metrics.csv", newline="") as handle:
        rows = sum(1 for row in csv.DictReader(handle) if row.get("test/mrr"))
    return f"{rows} test row{'s' if rows != 1 else ''} in csv/metrics.csv"


def left_files(name: str) -> Callable[[Path], str]:
    """What is left at ``$DIR/disk/<name>``: ``no <name>``, or its files and their sizes."""

    def after(folder: Path) -> str:
        path = folder / "disk" / name
        hidden = [p.name for p in (folder / "disk").iterdir() if p.name.startswith(".")]
        if not path.exists():
            found = f"no {name}"
        elif path.is_file():
            found = f"{name}: {path.stat().st_size} bytes"
        else:
            ours = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".ckpt", ".json", ".tsv", ".png"))
            found = ", ".join(f"{p.relative_to(path)} ({p.stat().st_size} bytes)" for p in ours) or f"{name}/ holds none of ours"
        return found + (f"; hidden: {', '.join(hidden)}" if hidden else "; nothing hidden left")

    return after


def garbage(folder: Path) -> None:
    (folder / "garbage.ckpt").write_text("this is not a checkpoint\n")


def renamed(folder: Path) -> None:
    trained(folder)
    graph(rewrite("train", lambda t: t.replace("brazil\t", "brasil\t").replace("\tbrazil\n", "\tbrasil\n")))(folder)
    for split in ("valid", "test"):
        rewrite(split, lambda t: t.replace("brazil\t", "brasil\t").replace("\tbrazil\n", "\tbrasil\n"))(folder / "graph")


def used(folder: Path) -> None:
    (folder / "run").mkdir()
    (folder / "run" / "metrics.json").write_text("{}\n")


def a_file(folder: Path) -> None:
    (folder / "a_file").write_text("not a folder\n")


def countries(change: str) -> Callable[[Path], None]:
    """``$DIR/mirror/countries_S1`` (served), ``$DIR/cache`` (the cache); ``change`` says what is wrong."""

    def setup(folder: Path) -> None:
        mirror = folder / "mirror" / "countries_S1"
        shutil.copytree(COUNTRIES, mirror)
        if change == "duplicated":
            lines = (mirror / "train.txt").read_text(encoding="utf-8").splitlines(keepends=True)
            (mirror / "train.txt").write_text("".join(lines + lines[:1]), encoding="utf-8")
            return
        cache = folder / "cache" / "datasets" / "countries_S1"
        shutil.copytree(COUNTRIES, cache)
        run(["train", "data=countries_s1", GRAPH[-1], f"hydra.run.dir={folder / 'first'}"], folder,
            {"LIGHTNING_KGE_CACHE": str(folder / "cache")})  # verified once: a marker holds its SHA-256
        train = cache / "train.txt"
        stat, text = train.stat(), train.read_text(encoding="utf-8")
        swapped = text.replace("locatedin", "locatedIn", 1)  # same size, another relation label
        train.write_text(swapped, encoding="utf-8")
        os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        if change == "unreachable":
            shutil.rmtree(folder / "mirror")

    return setup


# --- the cases --------------------------------------------------------------------------------------

def fault(signal: str, step: int, rank: int = 0, stage: str = "train") -> list[str]:
    args = ["+callbacks.fault._target_=faults.SignalAt", f"+callbacks.fault.step={step}", f"+callbacks.fault.signal={signal}"]
    return args + ([f"+callbacks.fault.rank={rank}"] if rank else []) + (["+callbacks.fault.stage=test"] if stage == "test" else [])


MIRROR = {"LIGHTNING_KGE_MIRROR": "$MIRROR", "LIGHTNING_KGE_CACHE": "$DIR/cache"}
LONG = "x" * 250
ODD = {"brazil": "#x", "burma": "NULL", "china": '"quoted"', "cuba": "a\u2028b", "egypt": "back\\slash",
       "embassy": "$\\frac{$", "treaties": "a=b"}
"""Labels that readers, Hydra or matplotlib read specially, in place of some of nations'."""
RELATION_ODD = ("$\\frac{$", "a=b")
DDP = ["trainer=ddp_cpu", "trainer.max_steps=50", "trainer.strategy.timeout=20", "hydra.run.dir=$DIR/run"]
TMPFS = 64 * 1024

CASES = [
    # input files (data=tsv on a copy of nations)
    Case("UTF-8 byte order mark at the start of train.txt", ["train", *GRAPH],
         graph(rewrite("train", lambda t: "\ufeff" + t)), pick=WARNING),
    Case("header line in train.txt", ["train", *GRAPH], graph(rewrite("train", lambda t: "head\trelation\ttail\n" + t)), fast=True),
    Case("space after a label", ["train", *GRAPH], graph(rewrite("train", lambda t: t.replace("\tuk\n", "\tuk \n", 1)))),
    Case("NFC and NFD spellings of café", ["train", *GRAPH],
         graph(rewrite("train", lambda t: t + "cafe\u0301\tmilitaryalliance\tuk\ncaf\u00e9\tmilitaryalliance\tusa\n")),
         pick=WARNING),
    Case("NUL inside a label", ["train", *GRAPH], graph(rewrite("train", lambda t: t.replace("uk\n", "u\0k\n", 1)))),
    Case("control character inside a label", ["train", *GRAPH], graph(rewrite("train", lambda t: t.replace("uk\n", "u\x1bk\n", 1)))),
    Case("label of 250 characters with a trailing space", ["train", *GRAPH],
         graph(rewrite("train", lambda t: t + f"{LONG} \tmilitaryalliance\tuk\n"))),
    Case("duplicate triples in test.txt", ["train", *GRAPH], graph(rewrite("test", lambda t: t + t.splitlines(keepends=True)[0] * 2)),
         pick=WARNING),
    Case("two columns on a line", ["train", *GRAPH], graph(rewrite("test", lambda t: t + "brazil\tusa\n"))),
    Case("invalid UTF-8", ["train", *GRAPH], graph(raw("valid", b"brazil\tintergovorgs\t\xff\xfe\n"))),
    Case("empty train.txt", ["train", *GRAPH], graph(raw("train", b""))),
    Case("test.txt is a directory", ["train", *GRAPH], graph(as_folder("test"))),
    Case("valid label that train never saw", ["train", *GRAPH], graph(rewrite("valid", lambda t: t + "atlantis\tintergovorgs\tusa\n"))),
    Case("unknown dataset name", ["train", "data.name=nope"]),
    # config values
    Case("model.dim=0", ["train", "data=nations", "model.dim=0"]),
    Case("model.dim=-5", ["train", "data=nations", "model.dim=-5"]),
    Case("model.gamma=0", ["train", "data=nations", "model.gamma=0"]),
    Case("sampler.temperature=-1", ["train", "data=nations", "sampler.temperature=-1"]),
    Case("sampler.num_negatives=0", ["train", "data=nations", "sampler.num_negatives=0"]),
    Case("data.batch_size=0", ["train", "data=nations", "data.batch_size=0"]),
    Case("module.eval_chunk_size=0", ["train", "data=nations", "module.eval_chunk_size=0"]),
    Case("module.ties=weird, no sanity validation", ["train", "data=nations", "module.ties=weird",
                                                     "trainer.num_sanity_val_steps=0"]),
    Case("optimizer.lr=0", ["train", "data=nations", "optimizer.lr=0"]),
    Case("test_weights=weird", ["train", "data=nations", "test_weights=weird"], fast=True),
    Case("test_weights=best with no validation", ["train", *TRAIN, "test_weights=best", "trainer.check_val_every_n_epoch=100"]),
    Case("a key that does not exist", ["train", "data=nations", "modle.dim=8"], pick=r"^(Could not override.*|Key .*)$"),
    Case("HYDRA_FULL_ERROR=1 shows the traceback", ["train", "data=nations", "model.dim=0"],
         env={"HYDRA_FULL_ERROR": "1"}, pick=r"^(lightning_kge\.errors\.\w+: .*)$"),
    # checkpoints
    Case("evaluate a truncated checkpoint", ["evaluate", f"ckpt={CKPT}"],
         checkpoint_bytes(lambda b: b[: len(b) // 2])),
    Case("evaluate a file that is not a checkpoint", ["evaluate", "ckpt=$DIR/garbage.ckpt"], garbage, fast=True),
    Case("evaluate a missing checkpoint", ["evaluate", "ckpt=$DIR/missing.ckpt"]),
    Case("evaluate a folder as checkpoint", ["evaluate", "ckpt=$DIR"]),
    Case("evaluate on data with one label renamed", ["evaluate", f"ckpt={CKPT}", "data=tsv", "data.path=$DIR/graph"],
         renamed),
    Case("resume from a missing checkpoint", ["train", *TRAIN, "ckpt_path=$DIR/missing.ckpt"]),
    Case("resume with another model.dim", ["train", *TRAIN, "model.dim=16", f"ckpt_path={CKPT}"], trained),
    # run directories
    Case("new run into a folder that holds a run", ["train", *TRAIN, "hydra.run.dir=$DIR/run"], used),
    Case("output folder cannot be created", ["train", *TRAIN, "output_dir=$DIR/a_file/run"], a_file, fast=True),
    Case("checkpoint folder cannot be created", ["train", *TRAIN, "callbacks.checkpoint.dirpath=$DIR/a_file/ckpt",
                                                 "hydra.run.dir=$DIR/run"], a_file),
    # faults
    Case("loss diverges (optimizer.lr=1e38)", ["train", "data=nations", "trainer.max_steps=20", "optimizer.lr=1e38",
                                               "hydra.run.dir=$DIR/run"]),
    Case("SIGINT (Ctrl-C) at step 3", ["train", *TRAIN, "trainer.max_steps=50", *fault("SIGINT", 3), "hydra.run.dir=$DIR/run"]),
    Case("SIGTERM at step 3", ["train", *TRAIN, "trainer.max_steps=50", *fault("SIGTERM", 3), "hydra.run.dir=$DIR/run"]),
    Case("SIGKILL at step 6, then the same command with ckpt_path",
         ["train", *TRAIN, "trainer.max_steps=8", "callbacks.checkpoint.every_n_steps=5", *fault("SIGKILL", 6),
          "hydra.run.dir=$DIR/run"],
         then=["train", *TRAIN, "trainer.max_steps=8", "callbacks.checkpoint.every_n_steps=5", f"ckpt_path={CKPT}"],
         pick=r"^(error: .*|.*continuing the run in .*)$"),
    # full disks (a 64 KiB tmpfs at $DIR/disk; root only)
    Case("full disk while training (run folder on the tmpfs)", ["train", *TRAIN, "trainer.max_steps=8",
                                                                "hydra.run.dir=$DIR/disk/run"],
         disk=(TMPFS, None), after=left_files("run")),
    Case("full disk at evaluate (4 KiB free, no logger)", ["evaluate", f"ckpt={CKPT}", "hydra.run.dir=$DIR/disk/eval",
                                                           "hydra.output_subdir=null", "~logger"],
         trained, disk=(TMPFS, 4096), after=left_files("eval")),
    Case("full disk at export (4 KiB free)", ["export", f"ckpt={CKPT}", "out=$DIR/disk/emb"], trained,
         disk=(TMPFS, 4096), after=left_files("emb")),
    Case("full disk at plot (4 KiB free)", ["plot", f"ckpt={CKPT}", "out=$DIR/disk/plots"], trained,
         disk=(TMPFS, 4096), after=left_files("plots")),
    # DDP (2 CPU processes; rank 1 gets the signal at the end of step 3)
    Case("frozen rank under DDP (SIGSTOP), trainer.strategy.timeout=20", ["train", *TRAIN, *DDP, *fault("SIGSTOP", 3, rank=1)]),
    Case("lost rank under DDP (SIGKILL)", ["train", *TRAIN, *DDP, *fault("SIGKILL", 3, rank=1)]),
    # labels that TSV readers, Hydra and matplotlib read specially (#x, NULL, "quoted", U+2028, a backslash, $\frac{$, a=b)
    Case("export of such labels, read back", ["export", f"ckpt={CKPT}", "out=$DIR/emb"], odd_labels,
         pick=r"^(wrote .*)$", after=exported_labels),
    Case("plot a relation labelled $\\frac{$", ["plot", f"ckpt={CKPT}", "out=$DIR/plots", "relation='$\\frac{$'",
                                               "symmetric='a=b'"], odd_labels, pick=r"^(error: .*|wrote .*relation_phases.png)$"),
    Case("predict with quoted labels", ["predict", f"ckpt={CKPT}", "head='#x'", "relation='a=b'", "k=2"], odd_labels,
         pick=r"^(error: .*|# tails of .*)$"),
    Case("predict relation=#rel, unquoted", ["predict", "ckpt=$DIR/missing.ckpt", "head=x", "relation=#rel"], fast=True),
    Case("predict head=NULL", ["predict", "ckpt=$DIR/missing.ckpt", "head=NULL", "relation=r"], fast=True),
    Case("kill during the final test of a resumed run, then resume", ["train", *TRAIN, f"ckpt_path={CKPT}",
                                                                      *fault("SIGKILL", 0, stage="test"),
                                                                      "hydra.run.dir=$DIR/run"],
         trained, then=["train", *TRAIN, f"ckpt_path={CKPT}"], pick=r"^(error: .*|.*continuing the run in .*)$",
         after=count_test_rows),
    # downloads (a local mirror and cache)
    Case("mirror serves train.txt with one line twice", ["train", "data=countries_s1", GRAPH[-1]], countries("duplicated"),
         env=MIRROR, needs=COUNTRIES),
    Case("cached file edited, size and mtime kept", ["train", "data=countries_s1", GRAPH[-1]], countries("edited"),
         env=MIRROR, needs=COUNTRIES, pick=r"^.*(Downloading .*)$"),
    Case("cached file edited and the mirror unreachable", ["train", "data=countries_s1", GRAPH[-1]], countries("unreachable"),
         env=MIRROR, needs=COUNTRIES),
]


# --- running ----------------------------------------------------------------------------------------

def run(args: list[str], folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m lightning_kge.<args>`` in ``folder`` with ``$DIR`` expanded; scripts/ importable."""
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "scripts"), os.environ.get("PYTHONPATH")]))
    expanded = [a.replace("$DIR", str(folder)) for a in args]
    return subprocess.run([sys.executable, "-m", f"lightning_kge.{expanded[0]}", *COMMON.get(expanded[0], []), *expanded[1:]],
                          cwd=folder, env=environment, capture_output=True, text=True, timeout=900)


def message(result: subprocess.CompletedProcess, pick: str, folder: Path) -> str:
    """The line ``pick`` selects from stderr (then stdout), with ``folder`` shown as ``$DIR``."""
    for line in [*result.stderr.splitlines(), *result.stdout.splitlines()]:
        found = re.match(pick, line)
        if found:
            text = next((g for g in reversed(found.groups()) if g), found.group(0)) if found.groups() else found.group(0)
            return text.replace(str(folder.resolve()), "$DIR").replace(str(folder), "$DIR")
    return "(no message)"


def run_case(case: Case, root: Path) -> tuple[str, str]:
    """``(exit status, message)`` of one case, run in a new folder under ``root``."""
    if case.needs is not None and not case.needs.exists():
        return "-", f"(skipped: needs shared/data/{case.needs.name} beside the checkout)"
    folder = Path(tempfile.mkdtemp(dir=root)).resolve()
    server = None
    mounted = False
    try:
        env = {k: v.replace("$DIR", str(folder)) for k, v in case.env.items()}
        if case.setup is not None:
            case.setup(folder)
        if case.disk is not None:
            mounted = mount_tmpfs(folder / "disk", *case.disk)
            if not mounted:
                return "-", "(skipped: needs root and a tmpfs it can mount)"
        if "$MIRROR" in env.values():
            server = serve(folder / "mirror")
            env = {k: v.replace("$MIRROR", f"http://127.0.0.1:{server.server_address[1]}") for k, v in env.items()}
        result = run(case.args, folder, env)
        status, shown = str(result.returncode), message(result, case.pick, folder)
        if case.then is not None:
            again = run(case.then, folder, env)
            status, shown = f"{status}, then {again.returncode}", f"{shown} / {message(again, case.pick, folder)}"
        if case.after is not None:
            shown += " / " + case.after(folder).replace(str(folder), "$DIR")
        return status, shown.replace(f"http://127.0.0.1:{server.server_address[1]}", "$MIRROR") if server else shown
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if mounted:
            subprocess.run(["umount", str(folder / "disk")], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def mount_tmpfs(disk: Path, size: int, free: int | None) -> bool:
    """Mount a tmpfs of ``size`` bytes at ``disk`` and fill it but for ``free`` bytes; ``False`` if it cannot."""
    disk.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True).returncode:
        return False
    if free is not None:
        stat = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - free))
    return True


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def serve(root: Path) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 for ``root`` (if ``root`` does not exist, every request fails: 404)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def cell(text: str) -> str:
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def table(rows: list[tuple[Case, str, str]]) -> str:
    lines = ["| case | command | exit | message |", "|---|---|---|---|"]
    lines += [f"| {case.name} | {cell(case.command())} | {status} | {cell(shown)} |" for case, status, shown in rows]
    return "\n".join(lines) + "\n"


HEADER = """# Reliability: bad input, config errors and faults, and what each gives

Generated by `python scripts/reliability.py` (do not edit by hand): every case runs through the
real entry point in a fresh folder (`$DIR`) on tiny data. In the commands, `…` stands for
`{train}` (train) and `{evaluate}` (evaluate); the case's own arguments come after it. The
checkpoint cases first train a small nations run into `$DIR/run`. Exit status 2 is a user error
(one line on stderr, `error: <what> (<where>): <how to fix>`, no traceback); 130 and 143 are
SIGINT and SIGTERM after `checkpoints/last.ckpt` was saved; -9 is SIGKILL. `$MIRROR` is a local
HTTP server standing in for a dataset mirror. The full-disk cases mount a 64 KiB tmpfs at
`$DIR/disk` (filled but for the bytes said; root only); the DDP cases run two CPU processes. After
a ` / `, the message says what a case left behind. `torch {torch}`.

"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only these cases (printed; the doc is not written)")
    parser.add_argument("--list", action="store_true", help="list the case names")
    options = parser.parse_args(argv)
    if options.list:
        print("\n".join(case.name for case in CASES))
        return
    cases = [c for c in CASES if not options.names or c.name in options.names]
    with tempfile.TemporaryDirectory(prefix="reliability-") as root:
        rows = []
        for case in cases:
            status, shown = run_case(case, Path(root))
            print(f"{case.name}: {status}: {shown}", flush=True)
            rows.append((case, status, shown))
    if not options.names:
        header = HEADER.format(torch=torch.__version__, train=" ".join(COMMON["train"]), evaluate=" ".join(COMMON["evaluate"]))
        DOC.write_text(header + table(rows))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()

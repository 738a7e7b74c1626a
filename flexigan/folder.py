"""A compiled folder: what ``flexigan compile`` leaves in OUT, and the checks made before it is
read or replaced.

Nothing lost: a compile builds in a temporary folder beside OUT and renames it into place only
once every step has succeeded (:func:`staged`), so an error or Ctrl-C leaves no OUT, or the
previous one intact. ``--force`` replaces a folder only when its manifest says flexigan wrote it
and it holds nothing the user put there.

Nothing silently wrong: the manifest records the size and SHA-256 of every file the compile
wrote (:func:`seal`); every command that reads the folder checks them first (:func:`verify`)
and names a file that changed, went missing or no longer parses.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

from .errors import FolderError, UsageError
from .files import umask, write_json_atomic

__all__ = ["MANIFEST", "SIM_REPORT", "RUN_REPORT", "SYNTH_REPORT", "SYNTH_FOLDER",
           "RTL_SIM_FOLDER", "BOARD_SIM_FOLDER", "SIM_RUNS", "REPORT_HTML", "OUTPUTS",
           "WRITTEN_LATER", "sim_run_name", "digests", "seal", "read_manifest", "verify", "staged"]

MANIFEST = "manifest.json"
#: What the commands read from every manifest (:func:`flexigan.steps.record` writes them).
_KEYS = ("steps", "target", "config", "sparse")
#: What the commands that read a compiled folder write into it.
SIM_REPORT, RUN_REPORT, SYNTH_REPORT = "sim_report.json", "run_report.json", "synth_report.json"
SYNTH_FOLDER, RTL_SIM_FOLDER, BOARD_SIM_FOLDER = "synth", "rtl_sim", "board_sim"
OUTPUTS = ("output.npy", "output.npz")           # for one output, for several
#: The pictures ``simulate`` draws beside ``output.npy`` (or ``output.npz``) of image outputs:
#: ``output.png`` and ``output-onnxruntime.png``, ``output-<name>...`` for one of several.
OUTPUT_IMAGES = "output*.png"
#: The last report of each engine and zero-skipping setting (:func:`sim_run_name`), and the
#: HTML report of the folder (``flexigan report``).
SIM_RUNS, REPORT_HTML = "sim_runs", "report.html"
#: The names (top level of the folder; patterns) that a forced compile may delete beside the
#: files its manifest records: everything else is the user's and is never touched.
WRITTEN_LATER = (SIM_REPORT, RUN_REPORT, SYNTH_REPORT, SYNTH_FOLDER, RTL_SIM_FOLDER,
                 BOARD_SIM_FOLDER, SIM_RUNS, REPORT_HTML, *OUTPUTS, OUTPUT_IMAGES)


def sim_run_name(report):
    """The name in :data:`SIM_RUNS` of a ``flexigan simulate`` report: its engine, and for an
    engine with zero skipping whether it was on (``isa.json``, ``isa-no-sparse.json``)."""
    return report["engine"] + ("-no-sparse" if report.get("sparse") is False else "") + ".json"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def digests(root):
    """``{relative path: {"bytes", "sha256"}}`` of every file under ``root`` but the manifest."""
    root = Path(root)
    return {path.relative_to(root).as_posix(): {"bytes": path.stat().st_size,
                                                "sha256": _sha256(path)}
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.relative_to(root).as_posix() != MANIFEST}


def seal(root, manifest):
    """Write ``manifest`` into ``root`` with the :func:`digests` of the files there as
    ``files``; return it."""
    manifest = {**manifest, "files": digests(root)}
    write_json_atomic(Path(root) / MANIFEST, manifest)
    return manifest


def read_manifest(folder):
    """The manifest of the compiled ``folder`` (a dict); a :class:`FolderError` when there is
    none, or it is damaged, or flexigan did not write it."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FolderError(f"{folder} is not a compiled model folder (no {MANIFEST}); run "
                          "`flexigan compile` first")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise FolderError(f"{path} is damaged ({reason}); compile again") from None
    if not isinstance(document, dict) or "flexigan" not in document:
        raise FolderError(f"{path} is not a flexigan manifest; compile again")
    missing = [key for key in _KEYS if key not in document]
    if missing:
        raise FolderError(f"{path} is damaged (no {missing[0]!r}); compile again")
    return document


def _recorded(folder, manifest):
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(r, dict) and isinstance(r.get("bytes"), int)
            and isinstance(r.get("sha256"), str) for r in files.values()):
        raise FolderError(f"{Path(folder) / MANIFEST} records no digests of its files (an "
                          "older flexigan wrote it, or it was edited); compile again")
    return files


def verify(folder):
    """Check every file the manifest of ``folder`` records against its size and SHA-256;
    return the manifest.

    Raises :class:`FolderError` naming the first file that is missing or changed.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, record in _recorded(folder, manifest).items():
        path = folder / name
        if not path.is_file():
            raise FolderError(f"{name} is missing from {folder}; compile again")
        if path.stat().st_size != record["bytes"] or _sha256(path) != record["sha256"]:
            raise FolderError(f"{name} in {folder} does not match the manifest; compile again")
    return manifest


def _check_replaceable(out, force, products):
    """Refuse an ``out`` that a compile may not replace: a file; a non-empty folder without
    ``force``; with ``force``, a folder flexigan did not write or one that holds a file of the
    user's (one its manifest does not record, of none of the names in ``products`` and
    :data:`WRITTEN_LATER`)."""
    if out.is_symlink():
        raise UsageError(f"output {out} is a symbolic link; give the folder it points at")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise UsageError(f"output folder {out} is not empty; use --force to overwrite it")
    try:
        manifest = read_manifest(out)
    except FolderError as exc:
        raise UsageError(f"--force replaces only a folder that flexigan compiled, and {out} "
                         f"is not one ({exc}); it is left alone") from None
    # A manifest of an older flexigan records no files: its compile's products are known.
    recorded = manifest.get("files")
    ours = {MANIFEST, *(recorded if isinstance(recorded, dict) else ()), *products}
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out)
        if path.is_dir() and not path.is_symlink():
            continue
        if not {name.as_posix(), name.parts[0]} & ours and \
                not any(fnmatch.fnmatchcase(name.parts[0], later) for later in WRITTEN_LATER):
            raise UsageError(f"--force would delete {name.as_posix()} in {out}, which flexigan "
                             "did not write; move it away first")


@contextlib.contextmanager
def _signals_held():
    """Defer Ctrl-C (and SIGTERM) until the block has run: a signal that arrives meanwhile is
    raised again when it ends. (Masking the signal would not do: another thread of the process,
    one of numpy's say, would take it.) Outside the main thread the block runs unguarded."""
    received = []
    try:
        previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


def _swap(staging, out):
    """Put the folder ``staging`` in the place of ``out`` (missing, empty or a flexigan
    output), with no moment at which an interrupt leaves neither."""
    old = None
    with _signals_held():
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_dir() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old)               # onto the empty folder mkdtemp made
        elif out.is_dir():
            out.rmdir()
        try:
            os.rename(staging, out)
        except OSError:
            if old is not None:
                os.rename(old, out)           # the earlier folder back in its place
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged(out, force=False, products=()):
    """A temporary folder that replaces the output folder ``out`` when the ``with`` block ends
    without an exception, and is deleted when it raises (Ctrl-C included).

    ``out`` may be missing or an empty folder; with ``force``, also a folder flexigan compiled
    that holds nothing but the files its manifest records, the ``products`` a compile writes
    (paths, or top-level folders) and what the later commands write (:data:`WRITTEN_LATER`).
    Raises :class:`UsageError` otherwise, before the block runs, and when ``out`` cannot be
    written.
    """
    out = Path(out)
    if out.name in ("", ".."):                  # "." or "x/..": rename needs a name
        out = out.resolve()
    _check_replaceable(out, force, products)
    anchor = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if not anchor.is_dir():
        raise UsageError(f"cannot write the output folder {out}: {anchor} is not a folder")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=anchor))
        os.chmod(staging, 0o777 & ~umask())
    except OSError as exc:
        raise UsageError(f"cannot write the output folder {out}: {exc.strerror}") from None
    try:
        yield staging
        # The folder may have changed while the steps ran.
        _check_replaceable(out, force, products)
        try:
            _swap(staging, out)
        except OSError as exc:
            raise UsageError(f"cannot write the output folder {out}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

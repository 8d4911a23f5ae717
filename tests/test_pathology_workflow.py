"""The feature stage through Snakemake on a tiny cohort, with the real HIPT architectures (random weights):
both feature sets for every good slide, failures recorded per slide, and a no-op rerun."""

import shutil

import h5py
import pandas as pd
import pytest
import tifffile

from conftest import cohort_config, run_snakemake

pytestmark = pytest.mark.workflow


def zero_tile(path, tile_index):
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[tile_index], tif.pages[0].databytecounts[tile_index]
    data = bytearray(path.read_bytes())
    data[offset + 2:offset + count] = bytes(count - 2)
    path.write_bytes(bytes(data))


def test_feature_stage_writes_both_encoders_and_records_failures(tmp_path, tiny_cohort):
    # A copy of a demo slide with a zeroed level-0 tile: the slide stage (reading only coarser levels with a
    # small thumbnail) passes it, the feature stage cannot decode it.
    shutil.copyfile(tiny_cohort / "slides" / "P003-S1.tiff", tmp_path / "damaged.tiff")
    zero_tile(tmp_path / "damaged.tiff", 27)
    rows = [
        {"slide_id": "P002-S1", "patient_id": "P002", "path": str(tiny_cohort / "slides" / "P002-S1.tiff")},
        {"slide_id": "P003-S1", "patient_id": "P003", "path": str(tmp_path / "damaged.tiff")},
        {"slide_id": "P004-S1", "patient_id": "P004", "path": str(tiny_cohort / "slides" / "P004-S1.tiff")},
        {"slide_id": "P005-S1", "patient_id": "P005", "path": str(tmp_path / "lost.svs")},
    ]
    pd.DataFrame(rows).assign(mpp="").to_csv(tmp_path / "slides.tsv", sep="\t", index=False)
    base = cohort_config(tiny_cohort, tmp_path)
    import yaml

    config = yaml.safe_load(base.read_text())
    config["slides"] = str(tmp_path / "slides.tsv")
    config["n_shards"] = 2
    config["patching"]["thumbnail_px"] = 256
    config["pathology"].update(batch_size=16, num_workers=1, threads=2, resume_dir=str(tmp_path / "resume"))
    base.write_text(yaml.safe_dump(config))
    targets = [f"results/features/{e}/{f}" for e in ("hipt256", "hipt4k") for f in ("index.tsv", "slide_embeddings.parquet")]
    proc = run_snakemake(tmp_path, "--configfile", str(base), "--cores", "2", *targets)
    assert "pathology encoders with RANDOM weights: hipt256, hipt4k" in proc.stdout + proc.stderr

    for encoder, dim in (("hipt256", 384), ("hipt4k", 192)):
        index = pd.read_csv(tmp_path / f"results/features/{encoder}/index.tsv", sep="\t")
        assert list(index.columns) == ["slide_id", "patient_id", "path", "n", "dim"]
        assert index["slide_id"].tolist() == ["P002-S1", "P004-S1"] and (index["dim"] == dim).all()
        table = pd.read_parquet(tmp_path / f"results/features/{encoder}/slide_embeddings.parquet")
        assert table["slide_id"].tolist() == ["P002-S1", "P004-S1"]
        assert list(table.columns[2:]) == [f"f{i:04d}" for i in range(dim)]
        assert (table.dtypes.iloc[2:] == "float32").all()
        for row in index.itertuples():
            with h5py.File(tmp_path / row.path, "r") as f:
                assert f["features"].shape == (row.n, dim) and f.attrs["encoder"] == encoder
                assert f.attrs["weights"] == "random" and f.attrs["weights_random"]
        shards = pd.concat(pd.read_csv(p, sep="\t", keep_default_na=False)
                           for p in (tmp_path / f"results/features/{encoder}").glob("shard-*/index.tsv"))
        reasons = shards.set_index("slide_id")["reason"]
        assert "corrupt JPEG in tile 27" in reasons["P003-S1"] and "damaged.tiff" in reasons["P003-S1"]
        assert reasons["P005-S1"].startswith("slide stage failed: slide file not found")
        log = (tmp_path / f"logs/features/collect-{encoder}.log").read_text()
        assert "2 of 4 slides have no features" in log

    noop = run_snakemake(tmp_path, "--configfile", str(base), "-n", *targets)
    assert "Nothing to be done" in noop.stdout + noop.stderr

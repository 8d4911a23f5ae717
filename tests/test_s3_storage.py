"""The workflow's default target with S3 as default storage, against a moto S3 server on 127.0.0.1."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from anywhere_support import (
    copy_cohort, copy_workflow, driver_credentials, driver_env, moto_s3, run_snakemake, s3_client, s3_keys,
    s3_read, tiny_config,
)
from conftest import PATCH_ENCODER_ONLY, demo_slides_sheet

BUCKET, PREFIX = "tessera-test", "runs/tiny"
NT = "nt-v2-random-demo"


@pytest.mark.workflow
def test_default_target_runs_with_s3_default_storage(tmp_path, tiny_cohort):
    workdir = copy_workflow(tmp_path / "wf")
    cohort = copy_cohort(tiny_cohort, workdir / "cohort")
    # storage, not reading or features: the demo slides (not the CMU slide, 40 % of the tiles; slides on S3
    # are read in tests/test_pathology_extract.py) and the patch encoder
    demo_slides_sheet(cohort, cohort / "slides.tsv")
    config = tiny_config(workdir, "cohort", encoders=PATCH_ENCODER_ONLY)
    creds = driver_credentials()
    with moto_s3(BUCKET) as endpoint:
        env = driver_env(tmp_path / "home", AWS_ENDPOINT_URL_S3=endpoint, **creds)
        # Inputs that rules read as files live under the storage prefix, as they would in a real bucket.
        s3 = s3_client(endpoint)
        for f in cohort.rglob("*"):
            if f.is_file():
                s3.upload_file(str(f), BUCKET, f"{PREFIX}/{f.relative_to(workdir)}")

        storage = ["--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{BUCKET}/{PREFIX}"]
        args = ["--profile", "profiles/local", "--configfile", str(config), "--cores", "2", *storage]
        run = run_snakemake(args, workdir, env)
        assert run.returncode == 0, run.stderr[-4000:]

        keys = set(s3_keys(endpoint, BUCKET, PREFIX + "/"))
        # Outputs went to the bucket, not to the working directory.
        assert not (workdir / "results").exists()
        qc = pd.read_csv(io.BytesIO(s3_read(endpoint, BUCKET, f"{PREFIX}/results/qc/slides.tsv")), sep="\t")
        sheet = pd.read_csv(cohort / "slides.tsv", sep="\t")
        assert sorted(qc["slide_id"]) == sorted(sheet["slide_id"])
        assert (qc["status"] == "ok").all(), qc[["slide_id", "reason"]]
        # The cohort index names files by their logical paths, and every one of them is in the bucket.
        for col in ("patches_h5", "tissue_geojson", "thumbnail"):
            for path in qc[col]:
                assert path.startswith("results/slides/shard-"), path
                assert f"{PREFIX}/{path}" in keys, f"{path} is not in the bucket"
        assert any(k.endswith("/index.tsv") and "/results/slides/shard-" in k for k in keys)
        assert any(k.startswith(f"{PREFIX}/logs/") for k in keys)  # logs are stored too

        # Provenance names the workflow's paths, not the storage plugin's local cache, and reads the
        # feature files' weights from the bucket (they are not kept on this machine).
        genes = pd.read_parquet(io.BytesIO(s3_read(endpoint, BUCKET, f"{PREFIX}/results/genomics/{NT}/GENEA.parquet")))
        assert set(genes["weights"]) == {f"results/genomics/{NT}/random-weights/model.safetensors"}
        manifest = json.loads(s3_read(endpoint, BUCKET, f"{PREFIX}/results/manifest.json"))
        assert manifest["weights"]["genomics"]["weights"][0]["weights"] == genes["weights"].iloc[0]
        assert set(manifest["weights"]["pathology"]) == set(PATCH_ENCODER_ONLY)
        for encoder, entry in manifest["weights"]["pathology"].items():
            assert "note" not in entry and entry["weights"]["random"] is True, (encoder, entry)

        # Whatever the default target is now, all of it is in the bucket: nothing is left to do.
        again = run_snakemake([*args, "--dry-run"], workdir, env)
        assert again.returncode == 0, again.stderr[-4000:]
        assert "Nothing to be done" in again.stdout + again.stderr

        logs = "\n".join(p.read_text(errors="replace") for p in (workdir / ".snakemake" / "log").glob("*.log"))
        for secret in creds.values():
            assert secret not in logs + run.stdout + run.stderr

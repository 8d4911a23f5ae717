"""The explain stage's library: clusters, prevalence, association, galleries, report, bad inputs."""

from __future__ import annotations

import re

import h5py
import numpy as np
import openslide
import pandas as pd
import pytest
from scipy import stats
from sksurv.compare import compare_survival
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from explain_fakes import planted_cohort, run_explain
from tessera.errors import InputError
from tessera.explain import association, clusters, gallery
from tessera.explain.prevalence import patient_fractions
from tessera.explain.pseudonyms import Pseudonyms
from tessera.explain.report import ExplainSettings
from tessera.h5 import write_h5
from tessera.slides.slide import Slide


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    cohort = planted_cohort(root)
    run_explain(cohort, root / "explain", ExplainSettings(k=6, gallery_size=3, n_maps=0, min_patients=3))
    return cohort, root / "explain"


def test_planted_cluster_ranks_first_and_explains_the_risk(planted):
    cohort, out = planted
    table = pd.read_csv(out / "clusters.tsv", sep="\t").set_index("cluster")
    # Which cluster holds the planted texture's patches: read back every patch's assignment.
    with h5py.File(out / "assign" / "shard-0" / "labels.h5") as f:
        pairs = [(cohort["textures"][s], f[s]["cluster"][()]) for s in f]
    tex, lab = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    # k = 6 for 5 textures: k-means may split a texture, so the planted texture may own several clusters.
    purity = pd.Series(tex == 4).groupby(lab).mean()
    planted_clusters = list(purity.index[purity > 0.9])
    assert planted_clusters and np.isin(lab[tex == 4], planted_clusters).mean() > 0.95

    top = table.sort_values("rank").iloc[0]
    assert table.index[table["rank"] == 1][0] in planted_clusters
    assert top["spearman_rho"] > 0.7 and top["spearman_q"] < 1e-4
    assert top["cox_hr_per_sd"] > 1.5 and top["cox_ci_low"] > 1 and top["cox_q"] < 0.01
    assert top["logrank_p"] < 0.05 and top["km_n_high"] + top["km_n_low"] == 40
    r2 = pd.read_csv(out / "variance_explained.tsv", sep="\t").set_index("features")["cv_r2"]
    assert r2["cluster fractions"] > 0.6 and r2["clinical covariates"] < 0.2  # clinical columns here are noise
    fractions = pd.read_csv(out / "patient_fractions.tsv", sep="\t").set_index("patient_id")
    assert np.allclose(fractions.sum(axis=1), 1)
    planted_share = fractions[[f"c{c:03d}" for c in planted_clusters]].sum(axis=1)
    assert stats.spearmanr(planted_share, cohort["outcomes"].loc[fractions.index, "planted"])[0] > 0.95


def test_report_is_self_contained_with_ranking_banner_and_provenance(planted):
    _, out = planted
    html = (out / "report.html").read_text()
    assert 'id="ranking"' in html and 'id="random-weights-banner"' in html
    assert re.search(r"<dt>weights_sha256</dt><dd>random</dd>", html)
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/") for s in sources)  # nothing fetched from anywhere
    assert not re.search(r'href="(?!#)', html)  # only in-page links
    assert len(re.findall(r'<tr><td>\d+</td>', html)) == 6  # one ranking row per cluster


def test_streamed_assignment_equals_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=(1000, 16)).astype(np.float32), rng.normal(size=(7, 16)).astype(np.float32)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["features"] = x
    with h5py.File(tmp_path / "f.h5") as f:
        small = clusters.assign_slide(f["features"], c, 37, tmp_path)
        whole = clusters.assign_slide(f["features"], c, 10**6, tmp_path)
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    assert np.array_equal(small[0], whole[0]) and np.array_equal(small[0], d.argmin(1))
    assert np.allclose(small[1], np.sqrt(d.min(1)), rtol=1e-4)
    from sklearn.metrics import pairwise_distances_argmin_min

    ref_labels, ref_distance = pairwise_distances_argmin_min(x, c)
    assert np.array_equal(small[0], ref_labels) and np.allclose(small[1], ref_distance, rtol=1e-4)


def test_same_seed_same_clusters_and_a_slides_sample_does_not_depend_on_its_shard(tmp_path):
    cohort = planted_cohort(tmp_path / "c", n_patients=12)
    samples = []
    for shard, d in cohort["shard_dirs"].items():
        samples.append(tmp_path / f"{shard}.h5")
        clusters.sample_shard(d, samples[-1], per_slide_cap=20, seed=5)
    a = clusters.fit_centroids(samples, tmp_path / "a.h5", 5, seed=5, max_sample=10**6)
    b = clusters.fit_centroids(samples, tmp_path / "b.h5", 5, seed=5, max_sample=10**6)
    c = clusters.fit_centroids(samples, tmp_path / "c.h5", 5, seed=6, max_sample=10**6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Move one slide into a shard of its own: its sampled rows stay the same.
    first = cohort["shard_dirs"][next(iter(cohort["shard_dirs"]))]
    row = pd.read_csv(first / "index.tsv", sep="\t").iloc[[0]]
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / row["path"].iloc[0]).write_bytes((first / row["path"].iloc[0]).read_bytes())
    row.to_csv(alone / "index.tsv", sep="\t", index=False)
    clusters.sample_shard(alone, tmp_path / "alone.h5", per_slide_cap=20, seed=5)
    with h5py.File(samples[0]) as f, h5py.File(tmp_path / "alone.h5") as g:
        mine = f["slide"][()] == 0
        assert np.array_equal(f["row"][()][mine], g["row"][()]) and mine.sum() == 20
        assert np.array_equal(f["features"][()][mine], g["features"][()])


def test_k_larger_than_the_patches_is_an_error_and_auto_k_fits(tmp_path):
    with pytest.raises(InputError, match=r"k = 500 clusters is larger than the 120 sampled.*Fix: lower explain.k"):
        clusters.choose_k(500, n_patients=10, n_sample=120)
    assert clusters.choose_k("auto", n_patients=10, n_sample=120) == 8
    assert clusters.choose_k("auto", n_patients=5000, n_sample=10**6) == 200
    assert clusters.choose_k("auto", n_patients=300, n_sample=5) == 5
    with pytest.raises(InputError, match="at least 2"):
        clusters.choose_k("auto", n_patients=1, n_sample=1)
    cohort = planted_cohort(tmp_path / "c", n_patients=4)
    samples = [tmp_path / f"{s}.h5" for s in cohort["shard_dirs"]]
    for s, path in zip(cohort["shard_dirs"].values(), samples):
        clusters.sample_shard(s, path, per_slide_cap=3, seed=0)
    with pytest.raises(InputError, match="explain.per_slide_cap"):
        clusters.fit_centroids(samples, tmp_path / "c.h5", 50, seed=0, max_sample=100)


def test_identical_embeddings_cannot_make_k_clusters(tmp_path):
    d = tmp_path / "shard-0"
    write_h5(d / "S1.h5", {"coords": np.zeros((50, 2), np.int64), "features": np.ones((50, 8), np.float32)},
             {"encoder": "hipt256", "weights_sha256": "random"})
    pd.DataFrame([{"slide_id": "S1", "patient_id": "P1", "path": "S1.h5"}]).to_csv(d / "index.tsv", sep="\t", index=False)
    clusters.sample_shard(d, tmp_path / "s.h5", 50, 0)
    with pytest.raises(InputError, match="fewer distinct patch embeddings than k = 4"):
        clusters.fit_centroids([tmp_path / "s.h5"], tmp_path / "c.h5", 4, seed=0, max_sample=100)


def test_zero_patch_slide_and_broken_file_are_recorded_and_the_rest_goes_on(tmp_path):
    cohort = planted_cohort(tmp_path / "c", n_patients=16)
    shard = cohort["shard_dirs"]["shard-0"]
    index = pd.read_csv(shard / "index.tsv", sep="\t")
    empty, broken = index["slide_id"].iloc[0], index["slide_id"].iloc[1]
    write_h5(shard / f"{empty}.h5", {"coords": np.zeros((0, 2), np.int64), "features": np.zeros((0, 24), np.float32)},
             {"encoder": "hipt256", "weights": "random", "weights_sha256": "random", "patch_size_level0": 512})
    (shard / f"{broken}.h5").write_bytes(b"not an HDF5 file")
    out = run_explain(cohort, tmp_path / "explain")
    slides = pd.read_csv(out / "assign" / "shard-0" / "index.tsv", sep="\t").set_index("slide_id")
    assert slides.loc[empty, "status"] == "empty" and slides.loc[empty, "n_patches"] == 0
    assert slides.loc[broken, "status"] == "failed" and "cannot open feature file" in slides.loc[broken, "reason"]
    assert (slides.drop(index=[empty, broken])["status"] == "ok").all()
    patients = pd.read_csv(out / "patients.tsv", sep="\t", keep_default_na=False).set_index("patient_id")
    for slide in (empty, broken):
        patient = index.set_index("slide_id").loc[slide, "patient_id"]
        if (index["patient_id"] == patient).sum() == 1:  # the patient's only slide: left out, with the reason
            assert not patients.loc[patient, "included"] and slide in patients.loc[patient, "reason"]
    assert patients["included"].sum() >= 14
    html = (out / "report.html").read_text()
    assert 'id="bad-slides"' in html and empty in html


def test_mixed_weights_cannot_be_clustered_together(tmp_path):
    cohort = planted_cohort(tmp_path / "c", n_patients=6)
    shard = next(iter(cohort["shard_dirs"].values()))
    first = pd.read_csv(shard / "index.tsv", sep="\t")["slide_id"].iloc[0]
    with h5py.File(shard / f"{first}.h5", "a") as f:
        f.attrs["weights_sha256"] = "cd" * 32
    with pytest.raises(InputError, match="different encoders or weights"):
        clusters.sample_shard(shard, tmp_path / "s.h5", 10, 0)


def test_a_cluster_without_patients_is_listed_not_tested(tmp_path):
    cohort = planted_cohort(tmp_path / "c", n_patients=16)

    def add_far_centroid(path):
        with h5py.File(path, "a") as f:
            c = f["centroids"][()]
            del f["centroids"]
            f["centroids"] = np.vstack([c, np.full((1, c.shape[1]), 1e3, np.float32)])
            f.attrs["k"] = len(c) + 1

    out = run_explain(cohort, tmp_path / "explain", centroids_hook=add_far_centroid)
    table = pd.read_csv(out / "clusters.tsv", sep="\t").set_index("cluster")
    empty = table.loc[6]
    assert empty["status"].startswith("no patients") and empty["rank"] == 7 and empty["n_patients"] == 0
    assert empty[["spearman_rho", "cox_hr_per_sd", "cox_q", "logrank_p"]].isna().all()
    assert table.drop(index=6)["cox_q"].notna().all()  # FDR over the tested clusters only
    assert "no patient&#39;s patch is assigned to this cluster" in (out / "report.html").read_text()


def test_too_rare_clusters_are_not_tested():
    fractions = pd.DataFrame({0: [0.5, 0.5, 0.4, 0.6], 1: [0.5, 0.5, 0.6, 0.3], 2: [0, 0, 0, 0.1]},
                             index=["a", "b", "c", "d"])
    outcomes = pd.DataFrame({"risk": [1.0, 2, 3, 4], "time": [10, 20, 30, 40], "event": [1, 1, 0, 1]},
                            index=fractions.index)
    table, _ = association.associate(fractions, outcomes, min_patients=2)
    assert table.loc[2, "status"].startswith("not tested: present in 1 patient(s)") and table.loc[2, "rank"] == 3


def test_cox_information_is_the_logrank_test_and_hr_is_sksurvs():
    rng = np.random.default_rng(0)
    n = 150
    group = (rng.random(n) < 0.4).astype(float)
    time = rng.exponential(300, n) * np.exp(-0.5 * group)  # continuous: no tied times
    event = (rng.random(n) < 0.7).astype(int)
    # Score test at beta = 0 from our information = the log-rank test (exactly, without tied times).
    u, info = association.score_and_information(group, time, event, 0.0)
    chi2 = compare_survival(Surv.from_arrays(event.astype(bool), time), group)[0]
    assert u**2 / info == pytest.approx(chi2, rel=1e-9)
    # HR per SD = exp(sksurv's coefficient on the standardised covariate); CI and p from the same SE.
    x = rng.normal(size=n) + group
    res = association.cox_per_sd(x, time, event)
    z = ((x - x.mean()) / x.std(ddof=1))[:, None]
    beta = CoxPHSurvivalAnalysis().fit(z, Surv.from_arrays(event.astype(bool), time)).coef_[0]
    assert res.hr == pytest.approx(np.exp(beta), rel=1e-9)
    se = np.log(res.ci_high / res.ci_low) / (2 * 1.959964)
    assert res.p == pytest.approx(2 * stats.norm.sf(abs(beta) / se), rel=1e-6)
    # The information is the curvature of sksurv's own partial likelihood (finite differences).
    _, info_hat = association.score_and_information(z[:, 0], time, event, beta)
    assert se == pytest.approx(1 / np.sqrt(info_hat), rel=1e-6)
    h = 1e-4
    from sksurv.linear_model.coxph import CoxPHOptimizer

    nll = CoxPHOptimizer(z, event.astype(bool), time, np.zeros(1), "breslow").nlog_likelihood
    curvature = n * (nll(np.array([beta + h])) - 2 * nll(np.array([beta])) + nll(np.array([beta - h]))) / h**2
    assert info_hat == pytest.approx(curvature, rel=1e-4)


def test_km_split_and_spearman_match_the_libraries():
    rng = np.random.default_rng(3)
    x = np.where(rng.random(60) < 0.6, 0.0, rng.random(60))
    time, event = rng.integers(1, 500, 60).astype(float), (rng.random(60) < 0.6).astype(int)
    km = association.km_high_low(x, time, event)
    assert km.threshold == 0 and km.n_high == (x > 0).sum()  # over half lack it: present vs absent
    assert km.p == pytest.approx(compare_survival(Surv.from_arrays(event.astype(bool), time), x > 0)[1])


def test_out_of_fold_predictions_are_checked_and_averaged(tmp_path):
    path = tmp_path / "oof.tsv"
    pd.DataFrame({"patient_id": ["A", "A", "B", "B"], "fold": [0, 1, 1, 0], "repeat": [0, 1, 0, 1],
                  "risk": [1.0, 3.0, 0.5, 0.5], "time": [10, 10, 20, 20], "event": [1, 1, 0, 0]}).to_csv(
        path, sep="\t", index=False)
    oof = association.read_oof(path)
    assert oof.loc["A", "risk"] == 2.0 and oof.loc["A", "n_predictions"] == 2
    pd.DataFrame({"patient_id": ["A"], "risk": [1.0]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="lack column.*fold, repeat, time, event"):
        association.read_oof(path)


def test_pseudonyms_are_stable_keyed_and_replace_every_id(tmp_path, monkeypatch):
    salt = "s3cr3t-salt-0123456789"
    a, b = Pseudonyms(salt), Pseudonyms(salt)
    assert a.patient("P001") == b.patient("P001") and re.fullmatch(r"PT-[0-9a-f]{12}", a.patient("P001"))
    assert a.patient("P001") != Pseudonyms(salt + "x").patient("P001") and a.slide("P001") != a.patient("P001")
    with pytest.raises(InputError, match="shorter than 16"):
        Pseudonyms("short")
    settings = ExplainSettings(k=4, gallery_size=2, n_maps=0, pseudonymise=True, pseudonym_salt_env="COHORT_SALT")
    cohort = planted_cohort(tmp_path / "c", n_patients=12)
    monkeypatch.delenv("COHORT_SALT", raising=False)
    with pytest.raises(InputError, match="variable COHORT_SALT is not set"):
        run_explain(cohort, tmp_path / "unsalted", settings)
    monkeypatch.setenv("COHORT_SALT", salt)  # the salt comes from the environment, like a credential
    out = run_explain(cohort, tmp_path / "explain", settings)
    texts = [re.sub(r"data:image/[^\"]+", "", (out / name).read_text()) for name in ("report.html", "patients.tsv", "patient_fractions.tsv",
                                                   "gallery.tsv")]
    leaks = [m.group(0) for t in texts for m in re.finditer(r".{40}P0\d\d.{20}", t)]
    assert not leaks  # no real patient or slide ID anywhere
    assert all(salt not in t for t in texts)
    assert a.patient("P001") in texts[1] and "COHORT_SALT" in texts[0]  # the variable's name, never the salt


def test_gallery_reads_tissue_at_full_resolution_and_never_the_label(tmp_path, cmu_slide, monkeypatch):
    def refuse(self):
        raise AssertionError("associated images (label, macro) must never be read")

    monkeypatch.setattr(openslide.OpenSlide, "associated_images", property(refuse))
    with Slide(cmu_slide) as slide:
        patch = gallery.read_patch(slide, 1000, 800, 256, 256)  # 256 level-0 px → level 0, no resampling
        assert np.array_equal(patch, slide.read_region(1000, 800, 0, 256, 256))
        small = gallery.read_patch(slide, 1000, 800, 1024, 256)  # 1024 level-0 px shown at 256
        assert small.shape == (256, 256, 3)
    nearest = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "cluster": [0, 0, 0], "slide_id": ["S1", "S1", "S9"],
                            "x": [1000, 1200, 0], "y": [800, 800, 0], "size_level0": [256, 256, 256],
                            "distance": [0.1, 0.2, 0.05]})
    cand = gallery.write_candidates(nearest, [{"slide_id": "S1", "path": str(cmu_slide), "mpp": None}],
                                    tmp_path, gallery_size=2, gallery_px=256)
    assert list(cand["patient_id"]) == ["P3", "P1"]  # nearest first; S9 is unknown: recorded, not fatal
    assert cand.set_index("patient_id").loc["P3", "status"].startswith("not read")
    chosen = gallery.gather([tmp_path], gallery_size=2)
    assert list(chosen["patient_id"]) == ["P1"] and list(chosen["rank"]) == [1]
    import cv2

    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(chosen["jpeg"].iloc[0], np.uint8), 1), cv2.COLOR_BGR2RGB)
    with Slide(cmu_slide) as slide:
        beside = slide.read_region(1064, 800, 0, 256, 256)
    error = np.abs(decoded.astype(int) - patch.astype(int)).mean()
    assert error < 8 and error < 0.3 * np.abs(decoded.astype(int) - beside.astype(int)).mean()  # same pixels, JPEG


def test_patients_without_patches_are_left_out_with_the_reason():
    counts = pd.DataFrame({"slide_id": ["S1", "S1"], "patient_id": ["A", "A"], "cluster": [0, 2], "n_patches": [3, 1]})
    slides = pd.DataFrame({"slide_id": ["S1", "S2"], "patient_id": ["A", "B"], "status": ["ok", "empty"],
                           "reason": ["", "the slide has no patches"]})
    fractions, without = patient_fractions(counts, slides, k=3)
    assert fractions.loc["A"].tolist() == [0.75, 0.0, 0.25] and without == ["B"]


def test_config_checks_the_explain_section(monkeypatch):
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from conftest import REPO
    from tessera.config import check_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    schema = str(REPO / "config" / "schemas" / "config.schema.yaml")
    validate(config, schema)
    # config and code defaults agree, but for the demo's heatmap section (default: none)
    assert config["explain"]["attention_model"] == "hipt_gp"
    assert ExplainSettings.from_config({**config["explain"], "attention_model": None}) == ExplainSettings()
    for bad in ({"k": "many"}, {"k": 1}, {"per_slide_cap": 0}, {"unknown": 1}):
        with pytest.raises(WorkflowError):
            validate({**config, "explain": {**config["explain"], **bad}}, schema)
    salted = {**config, "explain": {**config["explain"], "pseudonymise": True, "pseudonym_salt_env": "TEST_SALT"}}
    with pytest.raises(InputError, match="pseudonymise is on but the pseudonym salt variable TEST_SALT is not set"):
        check_config(salted)
    monkeypatch.setenv("TEST_SALT", "abc")
    with pytest.raises(InputError, match="TEST_SALT is shorter than 16 characters"):
        check_config(salted)
    monkeypatch.setenv("TEST_SALT", "0123456789abcdef")
    check_config(salted)
    with pytest.raises(InputError, match="explain.model 'cox' is not one of survival.models") as err:
        check_config({**config, "explain": {**config["explain"], "model": "cox"}})
    assert err.value.field == "explain.model"
    with pytest.raises(InputError, match="explain.encoder 'uni' is not one of pathology.encoders"):
        check_config({**config, "explain": {**config["explain"], "encoder": "uni"}})


def test_report_without_a_risk_shows_the_clusters_by_prevalence(planted, tmp_path):
    """explain.model null (no survival stage, e.g. slides alone): clusters ranked by prevalence, galleries,
    no association, no R², every patient with patches included."""
    from tessera.explain.report import build_report

    cohort, out = planted
    assign = sorted((out / "assign").iterdir())
    settings = ExplainSettings(model=None, k=6, gallery_size=3, n_maps=0, min_patients=3)
    html = build_report(assign, out / "centroids.h5", None, None, cohort["sheet"], tmp_path, settings).read_text()
    assert 'id="no-risk"' in html and "Clusters ranked by prevalence" in html and 'id="variance-explained"' not in html
    assert "drive the risk" not in html and len(re.findall(r'<tr><td>\d+</td>', html)) == 6
    table = pd.read_csv(tmp_path / "clusters.tsv", sep="\t").sort_values("rank")
    assert table["spearman_rho"].isna().all() and table["n_patients"].is_monotonic_decreasing
    patients = pd.read_csv(tmp_path / "patients.tsv", sep="\t")
    assert len(patients) == 40 and patients["included"].all() and not patients["has_risk"].any()
    assert pd.read_csv(tmp_path / "variance_explained.tsv", sep="\t").empty

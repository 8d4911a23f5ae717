"""``tessera demo DIR``: a small, deterministic cohort in real formats with a planted survival signal.

The default cohort: 48 patients; 56 synthetic slides (8 patients have two) plus the real CMU-1-Small-Region
slide as the only slide of one more patient; a reference, a GTF, a multi-sample VCF, BAMs for the
patients without a VCF, and a clinical table. Survival times follow a proportional-hazards model
driven by the planted texture's share of the patient's tissue and by the planted variant; the truth
is written to ``truth.tsv`` and explained in the cohort's ``README.md``.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from tessera.demo import genome
from tessera.demo.slides import SLIDE_MPP, TRUTH_CODES, TRUTH_DOWNSAMPLE, synth_slide, write_aperio_tiff, write_truth_png
from tessera.demo.textures import PLANTED_TEXTURE

N_PATIENTS = 48
CMU_SLIDE = "CMU-1-Small-Region.svs"

#: log-hazard = BETA_TEXTURE · z(planted fraction) + BETA_VARIANT · dosage + BETA_AGE · z(age) + BETA_STAGE · (stage − 2.5)
#: The texture effect is strong enough to be found from 48 patients' random-weight slide embeddings
#: (the share is linearly decodable from them with CV r ≈ 0.86; the truth's C-index is 0.84).
BETA_TEXTURE, BETA_VARIANT, BETA_AGE, BETA_STAGE = 2.5, 0.9, 0.3, 0.25
BASELINE_PER_DAY = 1 / 3000.0


def _patients(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Patients P001…: latent truth and which data each has (48 → 8 with two slides, 5 BAM-only, 3 none)."""
    two, bam, none = min(8, max(1, n // 6)), min(5, max(1, n // 9)), min(3, max(1, n // 16))
    df = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(1, n + 1)]})
    df["planted_fraction_target"] = rng.uniform(0.0, 0.6, n)
    df.loc[0, "planted_fraction_target"] = 0.0  # P001 has only the real CMU slide: no planted texture
    df["variant_dosage"] = rng.choice([0, 1, 2], n, p=[0.5, 0.38, 0.12])
    df["age"] = np.round(rng.normal(63, 10, n)).astype(int)
    df["sex"] = rng.choice(["F", "M"], n)
    df["stage"] = rng.choice(["I", "II", "III", "IV"], n, p=[0.25, 0.35, 0.25, 0.15])
    order = rng.permutation(np.arange(1, n))  # P001 is the CMU patient
    df["n_slides"] = 1
    df.loc[order[:two], "n_slides"] = 2
    df["genomics"] = "vcf"
    df.loc[order[two : two + bam], "genomics"] = "bam"
    df.loc[order[two + bam : two + bam + none], "genomics"] = "none"
    return df


def _write_slides(rng: np.random.Generator, patients: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the slides and their truth label maps; return the slide sheet and the truth index."""
    (out / "slides").mkdir(parents=True, exist_ok=True)
    rows, truth_rows, planted_px, tissue_px = [], [], {}, {}
    for p in patients.itertuples():
        if p.patient_id == "P001":
            with resources.as_file(resources.files("tessera.demo") / "data" / CMU_SLIDE) as src:
                shutil.copyfile(src, out / "slides" / CMU_SLIDE)
            rows.append({"slide_id": "P001-S1", "patient_id": "P001", "path": f"slides/{CMU_SLIDE}", "mpp": ""})
            planted_px["P001"], tissue_px["P001"] = 0, 1
            continue
        for k in range(1, p.n_slides + 1):
            shape = (2048, int(rng.choice([2048, 2560, 3072])))
            target = float(np.clip(p.planted_fraction_target + rng.normal(0, 0.05), 0, 0.9))
            rgb, labels = synth_slide(rng, shape, target)
            slide_id = f"{p.patient_id}-S{k}"
            write_aperio_tiff(out / "slides" / f"{slide_id}.tiff", rgb)
            write_truth_png(out / "slides" / f"{slide_id}.truth.png", labels)
            rows.append({"slide_id": slide_id, "patient_id": p.patient_id, "path": f"slides/{slide_id}.tiff", "mpp": ""})
            counts = np.bincount(labels.ravel(), minlength=len(TRUTH_CODES))
            truth_rows.append({"slide_id": slide_id, "labels_png": f"slides/{slide_id}.truth.png",
                               "downsample": TRUTH_DOWNSAMPLE, "mpp": SLIDE_MPP * TRUTH_DOWNSAMPLE,
                               **{f"{name}_px": int(n) for name, n in zip(TRUTH_CODES, counts)}})
            planted_px[p.patient_id] = planted_px.get(p.patient_id, 0) + int(counts[TRUTH_CODES.index(PLANTED_TEXTURE)])
            tissue_px[p.patient_id] = tissue_px.get(p.patient_id, 0) + int(counts[1:].sum())
    patients["planted_fraction"] = [planted_px[p] / tissue_px[p] for p in patients["patient_id"]]
    return pd.DataFrame(rows), pd.DataFrame(truth_rows)


def _write_genomics(rng: np.random.Generator, patients: pd.DataFrame, out: Path) -> pd.DataFrame:
    seqs = genome.make_reference(rng)
    genome.write_fasta(out / "reference.fa", seqs)
    genome.write_gtf(out / "genes.gtf")
    variants = genome.draw_variants(rng, seqs)
    dosage = dict(zip(patients["patient_id"], patients["variant_dosage"]))
    genotypes = genome.draw_genotypes(rng, variants, dosage)
    with_vcf = patients.loc[patients["genomics"] == "vcf", "patient_id"]
    sample_of = {p: f"DNA-{p}" for p in with_vcf}
    genome.write_vcf(out / "variants.vcf.gz", seqs, variants, {p: genotypes[p] for p in with_vcf}, sample_of)
    (out / "bam").mkdir(exist_ok=True)
    rows = []
    for p in patients.itertuples():
        if p.genomics == "vcf":
            rows.append({"patient_id": p.patient_id, "vcf": "variants.vcf.gz", "vcf_sample": sample_of[p.patient_id], "bam": ""})
        elif p.genomics == "bam":
            calls = genotypes[p.patient_id]  # a BAM's haplotypes carry the same kind of variation
            haps = tuple([v for v, c in zip(variants, calls) if c[h] == 1] for h in (0, 1))
            genome.write_bam(out / "bam" / f"{p.patient_id}.bam", rng, seqs, haps, sample=p.patient_id)
            rows.append({"patient_id": p.patient_id, "vcf": "", "vcf_sample": "", "bam": f"bam/{p.patient_id}.bam"})
    return pd.DataFrame(rows)


def _survival(rng: np.random.Generator, patients: pd.DataFrame) -> None:
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    stage_num = patients["stage"].map({"I": 1, "II": 2, "III": 3, "IV": 4})
    lp = (BETA_TEXTURE * z(patients["planted_fraction"]) + BETA_VARIANT * patients["variant_dosage"]
          + BETA_AGE * z(patients["age"].astype(float)) + BETA_STAGE * (stage_num - 2.5))
    event_time = -np.log(rng.random(len(patients))) / (BASELINE_PER_DAY * np.exp(lp))
    censor_time = rng.uniform(365, 3650, len(patients))
    patients["log_hazard"] = lp.round(4)
    patients["time"] = np.maximum(1, np.round(np.minimum(event_time, censor_time))).astype(int)
    patients["event"] = (event_time <= censor_time).astype(int)


README = """# tessera demo cohort (seed {seed})

Written by `tessera demo`; every file is regenerated identically from the seed.

| file | what |
|---|---|
| `slides.tsv` | slide sheet: {n_slides} slides of {n_patients} patients |
| `slides/*.tiff` | synthetic Aperio-style pyramids: 0.25 µm/px (40x), levels 1, 4, 16x, 256-px JPEG tiles |
| `slides/{cmu}` | the real CMU-1-Small-Region slide (CC0), patient P001's only slide (0.499 µm/px, 20x) |
| `clinical.tsv` | `patient_id`, `time` (days), `event`, `age`, `sex`, `stage` |
| `genomics.tsv` | per patient a VCF sample or a BAM ({n_bam} BAM-only, {n_none} without genomic data) |
| `reference.fa`, `genes.gtf` | two contigs; GENEA (chr1, + strand) and GENEB (chr2, − strand) |
| `variants.vcf.gz` | multi-sample VCF (phased and unphased genotypes, SNVs, indels, an overlapping pair) |
| `truth.tsv` | the planted truth per patient |
| `slides/*.truth.png`, `slide_truth.tsv` | each synthetic slide's true tissue and textures (see "Slide truth") |

## Planted truth

Slides show five synthetic textures (tumour, stroma, lymphocytes, adipose, necrosis). Each patient
has a share of **{planted}** in their tissue (`planted_fraction` in `truth.tsv`, drawn from
U(0, 0.6), exact pixel counts of the slides as written). Each patient carries 0, 1 or 2 copies of
the planted variant **{variant}**: a 7-bp deletion in GENEA exon 2 (chr1:{pos}, VCF ID `planted_del7`;
`variant_dosage`). Event times are exponential with

    log-hazard = {bt} · z(planted_fraction) + {bv} · variant_dosage + {ba} · z(age) + {bs} · (stage − 2.5)

(z = standardised over the cohort; baseline hazard 1/3000 per day), censored uniformly between 1
and 10 years. More {planted} and more copies of the variant mean shorter survival. The truth's own
C-index (log-hazard against the observed outcomes) is {c_truth:.3f}.

## Slide truth

`slides/<slide_id>.truth.png` is the label map the generator painted the slide from (not a
segmentation of the image): a grey 8-bit PNG at {truth_mpp} µm/px, pixel (i, j) holding the label of
level-0 pixel (x, y) = ({ds}·j + {half}, {ds}·i + {half}) — the centre of its {ds} × {ds} block. Labels:
{legend}. Glass is everything outside the tissue outline, including the soft edge the image fades
over (σ = 3 level-0 px). `slide_truth.tsv` lists, per slide, the PNG, its `downsample` (level-0 pixels
per truth pixel) and `mpp`, and the exact level-0 pixel count of every label (`<label>_px`), from
which `planted_fraction` in `truth.tsv` is computed. The real CMU slide has no truth map.
"""


def make_demo_cohort(out_dir: str | Path, seed: int = 7, n_patients: int = N_PATIENTS) -> Path:
    """Write the demo cohort to ``out_dir`` (created; existing files overwritten). Returns its path.

    ``n_patients`` (at least 4) shrinks the cohort for tests; the planted model stays the same.
    """
    if n_patients < 4:
        raise ValueError("the demo cohort needs at least 4 patients")
    from sksurv.metrics import concordance_index_censored

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patients = _patients(rng, n_patients)
    slides, slide_truth = _write_slides(rng, patients, out)
    genomics = _write_genomics(rng, patients, out)
    _survival(rng, patients)

    slides.to_csv(out / "slides.tsv", sep="\t", index=False)
    slide_truth.to_csv(out / "slide_truth.tsv", sep="\t", index=False)
    genomics.to_csv(out / "genomics.tsv", sep="\t", index=False)
    patients[["patient_id", "time", "event", "age", "sex", "stage"]].to_csv(out / "clinical.tsv", sep="\t", index=False)
    truth = patients[["patient_id", "planted_fraction", "variant_dosage", "log_hazard", "genomics", "n_slides"]]
    truth.round({"planted_fraction": 4}).to_csv(out / "truth.tsv", sep="\t", index=False)
    c_truth = concordance_index_censored(patients["event"].astype(bool), patients["time"], patients["log_hazard"])[0]
    (out / "README.md").write_text(README.format(
        seed=seed, n_slides=len(slides), n_patients=len(patients), cmu=CMU_SLIDE,
        n_bam=int((patients["genomics"] == "bam").sum()), n_none=int((patients["genomics"] == "none").sum()), planted=PLANTED_TEXTURE, variant="planted_del7", pos=genome.PLANTED_VARIANT_POS + 1,
        bt=BETA_TEXTURE, bv=BETA_VARIANT, ba=BETA_AGE, bs=BETA_STAGE, c_truth=c_truth,
        truth_mpp=SLIDE_MPP * TRUTH_DOWNSAMPLE, ds=TRUTH_DOWNSAMPLE, half=TRUTH_DOWNSAMPLE // 2,
        legend=", ".join(f"{i} = {name}" for i, name in enumerate(TRUTH_CODES)),
    ))
    return out

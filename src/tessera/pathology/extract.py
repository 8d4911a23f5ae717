"""Feature extraction for one shard of slides: patch grids → per-slide HDF5 feature files per encoder.

Per shard and encoder, ``{out_dir}`` (``results/features/{encoder}/shard-{shard}/``) receives:

* ``{slide_id}.h5`` — ``coords`` (N, 2) int64 level-0 top-left (x, y) and ``features`` (N, D) float32,
  GUIDE §3 attributes on the file and on ``coords`` (``patch_size``, ``patch_size_level0``,
  ``target_magnification``, ``level0_magnification``, ``level0_width``, ``level0_height``, ``overlap``,
  ``encoder``), plus provenance: weights path/URI and SHA-256 or ``random``, precision, device, reader.
  A patch encoder writes one row per tissue patch of the slide's grid (same ``coords`` and order); a
  region encoder one row per region (``coords`` = region top-left, ``patch_size`` = region size, and a
  ``region_sizes`` dataset for regions clipped at the border).
* ``index.tsv`` — one row per slide of the shard: ``slide_id``, ``patient_id``, ``status`` (ok | failed),
  ``reason``, ``path`` (relative to the shard directory), ``n``, ``dim``.
* ``slide_embeddings.parquet`` — per ok slide: ``slide_id``, ``patient_id``, ``f0000``… float32, the mean
  of its rows (patches for a patch encoder, regions for a region encoder).

The patch encoder runs once per distinct patch (see :mod:`tessera.pathology.patches`); region encoders
reuse those outputs. Reading runs in DataLoader worker processes, the models in this process. Slides the
slide stage failed are recorded and skipped; a slide whose pixels cannot be read fails alone.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from tessera import __version__
from tessera.atomic import atomic_path
from tessera.devices import torch_device
from tessera.errors import InputError, SlideError
from tessera.h5 import read_h5, write_h5
from tessera.pathology import registry
from tessera.pathology.checkpoints import Weights, build_encoder
from tessera.pathology.params import ExtractParams
from tessera.pathology.patches import PatchBatches, SlidePlan, forget_local, plan_slide
from tessera.pathology.resume import ResumeCache, slide_fingerprint, slide_key

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["slide_id", "patient_id", "status", "reason", "path", "n", "dim"]
REGION_BATCH = 32  # regions per region-encoder forward


def _precision(params: ExtractParams, device: torch.device) -> str:
    if params.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return params.precision


class Encoders:
    """The loaded models of a run and how a batch of uint8 patches becomes features on ``device``."""

    def __init__(self, params: ExtractParams, device: torch.device) -> None:
        self.set = registry.resolve(list(params.encoders))
        self.device, self.precision = device, _precision(params, device)
        self.channels_last = params.channels_last and device.type == "cuda"
        self.models: dict[str, torch.nn.Module] = {}
        self.weights: dict[str, Weights] = {}
        for spec in self.set.models:
            model, info = build_encoder(spec, params.weights.get(spec.name, ""), params.random_seed)
            model = model.to(device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.models[spec.name], self.weights[spec.name] = model, info
        patch = self.set.patch
        self._scale = (1.0 / (255.0 * torch.tensor(patch.std))).view(1, 3, 1, 1).to(device)
        self._shift = (torch.tensor(patch.mean) / torch.tensor(patch.std)).view(1, 3, 1, 1).to(device)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, P, P, 3) uint8 → (B, D) float32 patch features on the device."""
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()  # NHWC memory = channels_last
        x = x * self._scale - self._shift  # (x / 255 - mean) / std
        if not self.channels_last:
            x = x.contiguous()
        with self.autocast():
            return self.models[self.set.patch.name](x).float()

    def encode_regions(self, spec: registry.EncoderSpec, feats: torch.Tensor, plan: SlidePlan) -> torch.Tensor:
        """Region features (M, D) float32 from the slide's patch features ``feats`` (U, D_patch)."""
        out = torch.empty(len(plan.region_rows), spec.dim, device=self.device)
        by_grid: dict[tuple[int, int], list[int]] = {}
        for r, (rows, cols) in enumerate(plan.region_grid.tolist()):
            by_grid.setdefault((rows, cols), []).append(r)
        for (rows, cols), members in by_grid.items():
            for i in range(0, len(members), REGION_BATCH):
                chunk = members[i:i + REGION_BATCH]
                index = torch.as_tensor(np.stack([plan.region_rows[r] for r in chunk]), device=self.device)
                grid = feats[index].reshape(len(chunk), rows, cols, -1).permute(0, 3, 1, 2)  # (b, D, rows, cols)
                with self.autocast():
                    out[chunk] = self.models[spec.name](grid).float()
        return out

    def key_parts(self, params: ExtractParams) -> dict:
        """What the features depend on besides the slide (part of the resume key)."""
        return {
            "encoders": [(s.name, s.kind, s.dim, s.patch_px, s.mean, s.std, s.patch_encoder) for s in self.set.models],
            "weights": {n: (w.sha256 or f"random:{w.seed}") for n, w in self.weights.items()},
            "batch_size": params.batch_size, "precision": self.precision, "device": self.device.type,
            "channels_last": self.channels_last, "torch": str(torch.__version__), "tessera": __version__,
        }


def _feature_attrs(plan: SlidePlan, enc: Encoders, spec: registry.EncoderSpec) -> dict:
    a = dict(plan.attrs)
    attrs = {**a, "slide_id": plan.slide_id, "encoder": spec.name, "encoder_kind": spec.kind, "dim": spec.dim,
             **enc.weights[spec.name].attrs(), "precision": enc.precision, "device": enc.device.type,
             "tessera_version": __version__, "torch_version": str(torch.__version__), **plan.read_info,
             "resample": "area"}
    if spec.kind == "region":
        attrs.update(patch_size=a["region_size"], patch_size_level0=a["region_size_level0"],
                     grid_patch_size=a["patch_size"], grid_patch_size_level0=a["patch_size_level0"],
                     patch_encoder=spec.patch_encoder, **enc.weights[spec.patch_encoder].attrs("patch_weights"))
    return attrs


def _write_slide(plan: SlidePlan, feats: torch.Tensor, enc: Encoders, out_dirs: dict[str, Path]) -> dict[str, Path]:
    """Write the slide's file for every output encoder; return encoder → path."""
    written = {}
    for name in enc.set.outputs:
        spec = registry.get(name)
        if spec.kind == "patch":
            rows = torch.as_tensor(plan.patch_rows, device=feats.device)
            datasets = {"coords": plan.coords, "features": feats[rows].cpu().numpy()}
        else:
            datasets = {"coords": plan.region_coords, "features": enc.encode_regions(spec, feats, plan).cpu().numpy(),
                        "region_sizes": plan.region_sizes}
        path = out_dirs[name] / f"{plan.slide_id}.h5"
        write_h5(path, datasets, _feature_attrs(plan, enc, spec))
        written[name] = path
    return written


class ShardResult:
    """Index rows and slide embeddings per output encoder, gathered while a shard runs."""

    def __init__(self, outputs: tuple[str, ...]) -> None:
        self.rows: dict[str, list[dict]] = {n: [] for n in outputs}
        self.means: dict[str, list[tuple[str, str, np.ndarray]]] = {n: [] for n in outputs}

    def failed(self, slide_id: str, patient_id: str, reason: str) -> None:
        for rows in self.rows.values():
            rows.append({"slide_id": slide_id, "patient_id": patient_id, "status": "failed", "reason": reason,
                         "path": "", "n": 0, "dim": 0})

    def ok(self, slide_id: str, patient_id: str, files: dict[str, Path]) -> None:
        for name, path in files.items():
            features = read_h5(path)[0]["features"]
            if len(features) == 0:
                self.rows[name].append({"slide_id": slide_id, "patient_id": patient_id, "status": "failed",
                                        "reason": "no rows (no region passes patching.min_region_tissue_fraction)",
                                        "path": path.name, "n": 0, "dim": features.shape[1]})
                continue
            self.rows[name].append({"slide_id": slide_id, "patient_id": patient_id, "status": "ok", "reason": "",
                                    "path": path.name, "n": len(features), "dim": features.shape[1]})
            self.means[name].append((slide_id, patient_id, features.astype(np.float64).mean(0).astype(np.float32)))

    def write(self, out_dirs: dict[str, Path], order: list[str]) -> dict[str, pd.DataFrame]:
        rank = {s: i for i, s in enumerate(order)}
        indexes = {}
        for name, rows in self.rows.items():
            index = pd.DataFrame(sorted(rows, key=lambda r: rank[r["slide_id"]]), columns=INDEX_COLUMNS)
            with atomic_path(out_dirs[name] / "index.tsv") as tmp:
                index.to_csv(tmp, sep="\t", index=False)
            write_embeddings(out_dirs[name] / "slide_embeddings.parquet", self.means[name], registry.get(name).dim)
            indexes[name] = index
        return indexes


def embedding_columns(dim: int) -> list[str]:
    return [f"f{i:04d}" for i in range(dim)]


def write_embeddings(path: Path, means: list[tuple[str, str, np.ndarray]], dim: int | None = None) -> None:
    """Parquet of slide embeddings: ``slide_id``, ``patient_id``, ``f0000``… float32 (sorted by slide_id)."""
    means = sorted(means, key=lambda m: m[0])
    dim = dim if dim is not None else (len(means[0][2]) if means else 0)
    matrix = np.stack([m[2] for m in means]).astype(np.float32) if means else np.zeros((0, dim), np.float32)
    frame = pd.DataFrame(matrix, columns=embedding_columns(matrix.shape[1]))
    frame.insert(0, "patient_id", [m[1] for m in means])
    frame.insert(0, "slide_id", [m[0] for m in means])
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def _read_slide_index(slides_dir: Path) -> dict[str, dict]:
    index = pd.read_csv(slides_dir / "index.tsv", sep="\t", dtype=str, keep_default_na=False)
    return {row["slide_id"]: row for row in index.to_dict("records")}


def extract_shard(slides: list[dict], slides_dir: str | Path, out_dirs: dict[str, str | Path],
                  params: ExtractParams, threads: int = 1) -> dict[str, pd.DataFrame]:
    """Extract features for the slides of one shard; write each encoder's shard directory; return the indexes.

    ``slides``: records with ``slide_id``, ``patient_id``, ``path`` (the shard's slide sheet rows);
    ``slides_dir``: the slide stage's shard directory; ``out_dirs``: encoder → output directory, one per
    configured encoder. Raises :class:`InputError` for a bad configuration (weights, encoders); slide
    problems are recorded in the indexes instead.
    """
    start_time = time.perf_counter()
    slides_dir = Path(slides_dir)
    out_dirs = {name: Path(d) for name, d in out_dirs.items()}
    for d in out_dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, threads))
    device = torch_device(params.device)
    enc = Encoders(params, device)
    if set(out_dirs) != set(enc.set.outputs):
        raise InputError(f"output directories for {sorted(out_dirs)} but encoders {list(enc.set.outputs)}",
                         field="pathology.encoders", fix="keep the rule's outputs and pathology.encoders in step")
    log.info("device %s, precision %s, batch %d, %d workers, %d threads; encoders %s", device, enc.precision,
             params.batch_size, params.num_workers, threads, ", ".join(enc.set.outputs))
    cache = ResumeCache(params.resume_dir)
    result = ShardResult(enc.set.outputs)
    grid_index = _read_slide_index(slides_dir)
    common = enc.key_parts(params)

    todo: list[tuple[SlidePlan, str]] = []
    for rec in slides:
        sid, pid = rec["slide_id"], rec["patient_id"]
        row = grid_index.get(sid)
        if row is None or row["status"] != "ok":
            reason = row["reason"] if row is not None else "missing from the slide stage index"
            result.failed(sid, pid, f"slide stage failed: {reason}")
            log.warning("%s skipped: the slide stage failed (%s)", sid, reason)
            continue
        try:
            plan = plan_slide(sid, pid, rec["path"], slides_dir / row["patches_h5"])
            if len(plan.unique) == 0:
                raise SlideError(f"the patch grid of {sid} is empty. Fix: check the slide stage's QC for this slide")
            key = slide_key(slide=sid, file=slide_fingerprint(rec["path"]), grid=plan.grid_digest, **common)
        except (SlideError, OSError) as e:
            result.failed(sid, pid, str(e))
            log.error("%s failed: %s", sid, e)
            continue
        targets = {name: out_dirs[name] / f"{sid}.h5" for name in enc.set.outputs}
        if cache.restore(sid, key, targets):
            result.ok(sid, pid, targets)
            log.info("%s: resumed from %s", sid, cache.root)
        else:
            todo.append((plan, key))

    n_patches = sum(len(p.unique) for p, _ in todo)
    log.info("%d slides to compute (%d patches), %d resumed or skipped", len(todo), n_patches, len(slides) - len(todo))
    if todo:
        encode_plans(todo, enc, params, out_dirs, cache, result)
    indexes = result.write(out_dirs, [r["slide_id"] for r in slides])
    seconds = time.perf_counter() - start_time
    log.info("shard done in %.1f s (%.1f patches/s computed)", seconds, n_patches / max(seconds, 1e-9))
    return indexes


def encode_plans(todo: list[tuple[SlidePlan, str]], enc: Encoders, params: ExtractParams, out_dirs: dict[str, Path],
                 cache: ResumeCache, result: ShardResult) -> None:
    """Read, encode and write the planned slides (with their resume keys); record each in ``result``.

    Batches come back from the workers in order; a slide is written as soon as its last batch is encoded.
    """
    plans = [p for p, _ in todo]
    failed = torch.zeros(len(plans), dtype=torch.uint8).share_memory_()
    patch_spec = enc.set.patch
    total, encoded, start, last_report = sum(len(p.unique) for p in plans), 0, time.perf_counter(), time.perf_counter()
    # Forked workers must not inherit a running OpenCV thread pool (it deadlocks after fork): run the
    # parent's pool down to one thread while they live (the workers then resample on one thread each).
    cv_threads = cv2.getNumThreads()
    if params.num_workers:
        cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="tessera-features-") as scratch:
            dataset = PatchBatches(plans, params.batch_size, patch_spec.patch_px, Path(scratch), failed,
                                   cache_bytes=params.tile_cache_mb << 20)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=None, shuffle=False, num_workers=params.num_workers,
                pin_memory=enc.device.type == "cuda",
            )  # torch runs each worker on one thread
            feats: dict[int, torch.Tensor] = {}
            done: dict[int, int] = {}
            with torch.inference_mode():
                for batch in loader:
                    s = batch["slide"]
                    plan = plans[s]
                    if failed[s]:
                        continue
                    if batch["error"]:
                        failed[s] = 1
                        feats.pop(s, None)
                        forget_local(plan.path, Path(scratch))
                        result.failed(plan.slide_id, plan.patient_id, batch["error"])
                        log.error("%s failed: %s", plan.slide_id, batch["error"])
                        continue
                    if s not in feats:
                        feats[s] = torch.empty(len(plan.unique), patch_spec.dim, device=enc.device)
                        plan.read_info = batch["read"]
                    n = len(batch["pixels"])
                    feats[s][batch["start"]:batch["start"] + n] = enc.encode_patches(batch["pixels"])
                    done[s] = done.get(s, 0) + n
                    if done[s] == len(plan.unique):
                        forget_local(plan.path, Path(scratch))
                        _finish(plan, todo[s][1], feats.pop(s), enc, out_dirs, cache, result)
                    encoded += n
                    if time.perf_counter() - last_report > 60:
                        last_report = time.perf_counter()
                        log.info("%d of %d patches (%.1f patches/s)", encoded, total, encoded / (last_report - start))
            dataset.close()
    finally:
        cv2.setNumThreads(cv_threads)


def _finish(plan: SlidePlan, key: str, feats: torch.Tensor, enc: Encoders, out_dirs: dict[str, Path],
            cache: ResumeCache, result: ShardResult) -> None:
    """Write a slide whose patches are all encoded; keep it for resuming; record it."""
    files = _write_slide(plan, feats, enc, out_dirs)
    cache.store(plan.slide_id, key, files)
    result.ok(plan.slide_id, plan.patient_id, files)
    log.info("%s: %d patches encoded, %d regions (%s level %s)", plan.slide_id, len(plan.unique),
             len(plan.region_rows), plan.read_info.get("reader"), plan.read_info.get("read_level"))

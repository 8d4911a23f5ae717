"""Feature extraction for one shard of slides: slide plans → per-slide HDF5 feature files per encoder.

Per shard and encoder, ``{out_dir}`` (``results/features/{encoder}/shard-{shard}/``) receives:

* ``{slide_id}.h5`` — ``coords`` (N, 2) int64 level-0 top-left (x, y) and ``features`` (N, D) float32,
  GUIDE §3 attributes on the file and on ``coords`` (``patch_size``, ``patch_size_level0``,
  ``target_magnification``, ``level0_magnification``, ``level0_width``, ``level0_height``, ``overlap``,
  ``encoder``) of the encoder's own grid, plus how the network saw the tiles (``transform``,
  ``input_size``, ``input_mpp`` = effective µm/px, ``mean``, ``std``, ``output``) and provenance:
  weights path/URI and SHA-256 or ``random``, precision, device, reader. A patch encoder writes one row per
  tissue tile of its grid; a region encoder one row per region (``coords`` = region top-left,
  ``patch_size`` = region size, and a ``region_sizes`` dataset for regions clipped at the border). With
  ``region_tokens`` a region encoder's file also holds the input it read: ``tokens`` (M, G, G, D_patch)
  float16, each region's grid of patch-encoder features (G = region / patch size, row-major; rows and
  columns beyond a border region's grid are zero) and ``token_grid`` (M, 2) int64, its (rows, cols) —
  what the ``hipt_lgp`` survival model fine-tunes the region encoder on.
* ``index.tsv`` — one row per slide of the shard: ``slide_id``, ``patient_id``, ``status`` (ok | failed),
  ``reason``, ``path`` (relative to the shard directory), ``n``, ``dim``.
* ``slide_embeddings.parquet`` — per ok slide: ``slide_id``, ``patient_id``, ``f0000``… float32, the mean
  of its rows (tiles for a patch encoder, regions for a region encoder).

Encoders that read the same tile size at the same resolution form one grid group
(:func:`~tessera.pathology.encoders.registry.resolve`): each tile of the group is decoded once in a
DataLoader worker, transformed once per distinct published transform, and every encoder of the group
runs on it; region encoders reuse their patch encoder's outputs. Each (slide, group) is one plan, written,
kept for resuming and failed on its own. Slides the slide stage failed are recorded and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import torch

from tessera import __version__
from tessera.atomic import atomic_path
from tessera.devices import torch_device, use_cpu_threads
from tessera.errors import InputError, SlideError
from tessera.h5 import write_h5
from tessera.pathology.encoders import registry
from tessera.pathology.encoders.checkpoints import Weights, build_encoder
from tessera.pathology.encoders.registry import EncoderSpec, GridGroup
from tessera.pathology.params import ExtractParams
from tessera.pathology.patches import PatchBatches, SlidePlan, forget_local, plan_derived, plan_slide
from tessera.pathology.resume import ResumeCache, slide_fingerprint, slide_key

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["slide_id", "patient_id", "status", "reason", "path", "n", "dim"]
REGION_BATCH = 32  # regions per region-encoder forward


def _precision(params: ExtractParams, device: torch.device) -> str:
    if params.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return params.precision


@dataclass
class TileBatch:
    """One batch of one plan: ``views[i]`` (B, P, P, 3) uint8 = the tiles after the group's i-th transform."""

    group: GridGroup
    views: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.views[0])


class Encoders:
    """The loaded models of a run and how a batch of uint8 tiles becomes features on ``device``."""

    def __init__(self, params: ExtractParams, device: torch.device) -> None:
        self.set = registry.resolve(list(params.encoders))
        self.device, self.precision = device, _precision(params, device)
        self.region_tokens = params.region_tokens
        self.channels_last = params.channels_last and device.type == "cuda"
        self.models: dict[str, torch.nn.Module] = {}
        self.weights: dict[str, Weights] = {}
        self._norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for spec in self.set.models:
            model, info = build_encoder(spec, params.weights.get(spec.name, ""), params.random_seed)
            model = model.to(device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.models[spec.name], self.weights[spec.name] = model, info
            if spec.kind == "patch":
                std, mean = torch.tensor(spec.std), torch.tensor(spec.mean)
                self._norm[spec.name] = ((1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device),
                                         (mean / std).view(1, 3, 1, 1).to(device))

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode_patches(self, tiles: TileBatch) -> dict[str, torch.Tensor]:
        """Every patch encoder of the batch's group: name → (B, D) float32 features on the device."""
        out, on_device = {}, {}
        for spec in tiles.group.patches:
            view = tiles.group.transforms.index(spec.transform)
            if view not in on_device:  # NHWC memory = channels_last
                on_device[view] = tiles.views[view].to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            scale, shift = self._norm[spec.name]
            x = on_device[view] * scale - shift  # (x / 255 - mean) / std
            if not self.channels_last:
                x = x.contiguous()
            with self.autocast():
                out[spec.name] = self.models[spec.name](x).float()
        return out

    def encode_regions(self, spec: EncoderSpec, feats: torch.Tensor, plan: SlidePlan) -> torch.Tensor:
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

    def outputs(self, group: GridGroup) -> list[str]:
        """The configured outputs computed by ``group``, in configured order."""
        names = {s.name for s in group.models}
        return [n for n in self.set.outputs if n in names]

    def key_parts(self, params: ExtractParams, group: GridGroup) -> dict:
        """What a group's features depend on besides the slide (part of the resume key)."""
        return {
            "encoders": [(s.name, s.kind, s.dim, s.patch_px, s.tile_mpp, s.mean, s.std, repr(s.transform),
                          s.patch_encoder) for s in group.models],
            "weights": {s.name: (self.weights[s.name].sha256 or f"random:{self.weights[s.name].seed}")
                        for s in group.models},
            "batch_size": params.batch_size, "precision": self.precision, "device": self.device.type,
            "region_tokens": self.region_tokens and bool(group.regions),
            "channels_last": self.channels_last, "torch": str(torch.__version__), "tessera": __version__,
        }


def _feature_attrs(plan: SlidePlan, enc: Encoders, spec: EncoderSpec) -> dict:
    a = dict(plan.attrs)
    attrs = {**a, "slide_id": plan.slide_id, "encoder": spec.name, "encoder_kind": spec.kind, "dim": spec.dim,
             "output": spec.output, **enc.weights[spec.name].attrs(), "precision": enc.precision,
             "device": enc.device.type, "tessera_version": __version__, "torch_version": str(torch.__version__),
             **plan.read_info, "resample": "area"}
    if spec.kind == "region":
        patch = registry.get(spec.patch_encoder)
        attrs.update(patch_size=a["region_size"], patch_size_level0=a["region_size_level0"],
                     grid_patch_size=a["patch_size"], grid_patch_size_level0=a["patch_size_level0"],
                     patch_encoder=spec.patch_encoder, **enc.weights[spec.patch_encoder].attrs("patch_weights"))
    else:
        patch = spec
    tile_px = int(a["patch_size"])
    attrs.update(transform=patch.transform.describe(tile_px), input_size=patch.input_px,
                 input_mpp=round(patch.transform.out_mpp(tile_px, float(a["target_mpp"])), 6),
                 mean=list(patch.mean), std=list(patch.std))
    return attrs


def region_tokens(plan: SlidePlan, feats: torch.Tensor) -> dict[str, np.ndarray]:
    """``tokens`` (M, G, G, D) float16: each region's grid of patch features ``feats`` (U, D), zero beyond a
    border region's grid; ``token_grid`` (M, 2) its (rows, cols). G = region size / patch size."""
    side = int(plan.attrs["region_size"]) // int(plan.attrs["patch_size"])
    tokens = np.zeros((len(plan.region_rows), side, side, feats.shape[1]), np.float16)
    for r, ((rows, cols), members) in enumerate(zip(plan.region_grid.tolist(), plan.region_rows)):
        index = torch.as_tensor(members, device=feats.device)
        tokens[r, :rows, :cols] = feats[index].reshape(rows, cols, -1).cpu().numpy().astype(np.float16)
    return {"tokens": tokens, "token_grid": np.asarray(plan.region_grid, np.int64).reshape(-1, 2)}


def _write_slide(plan: SlidePlan, feats: dict[str, torch.Tensor], enc: Encoders, group: GridGroup,
                 out_dirs: dict[str, Path]) -> dict[str, Path]:
    """Write the slide's file for every output encoder of ``group``; return encoder → path."""
    written = {}
    for name in enc.outputs(group):
        spec = registry.get(name)
        if spec.kind == "patch":
            rows = torch.as_tensor(plan.patch_rows, device=feats[name].device)
            datasets = {"coords": plan.coords, "features": feats[name][rows].cpu().numpy()}
        else:
            regions = enc.encode_regions(spec, feats[spec.patch_encoder], plan)
            datasets = {"coords": plan.region_coords, "features": regions.cpu().numpy(),
                        "region_sizes": plan.region_sizes}
            if enc.region_tokens:
                datasets.update(region_tokens(plan, feats[spec.patch_encoder]))
        path = out_dirs[name] / f"{plan.slide_id}.h5"
        write_h5(path, datasets, _feature_attrs(plan, enc, spec))
        written[name] = path
    return written


class ShardResult:
    """Index rows and slide embeddings per output encoder, gathered while a shard runs."""

    def __init__(self, outputs: tuple[str, ...]) -> None:
        self.rows: dict[str, list[dict]] = {n: [] for n in outputs}
        self.means: dict[str, list[tuple[str, str, np.ndarray]]] = {n: [] for n in outputs}

    def failed(self, slide_id: str, patient_id: str, reason: str, names: list[str] | None = None) -> None:
        for name in names if names is not None else self.rows:
            self.rows[name].append({"slide_id": slide_id, "patient_id": patient_id, "status": "failed",
                                    "reason": reason, "path": "", "n": 0, "dim": 0})

    def ok(self, slide_id: str, patient_id: str, files: dict[str, Path]) -> None:
        for name, path in files.items():
            with h5py.File(path, "r") as f:
                features = f["features"][()]
            if len(features) == 0:
                self.rows[name].append({"slide_id": slide_id, "patient_id": patient_id, "status": "failed",
                                        "reason": "no rows (no tile or region passes the tissue threshold)",
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


@dataclass
class Job:
    """One (slide, grid group) to compute: its plan, resume key and group."""

    plan: SlidePlan
    key: str
    group: GridGroup


def _plan_group(rec: dict, row: dict, slides_dir: Path, group: GridGroup, min_tissue_fraction: float) -> SlidePlan:
    """The slide's plan for ``group``: the slide stage's grid when the geometry is the same, else a derived one."""
    grid_h5 = slides_dir / row["patches_h5"]
    with_regions = bool(group.regions)
    plan = plan_slide(rec["slide_id"], rec["patient_id"], rec["path"], grid_h5, with_regions=with_regions)
    if (int(plan.attrs["patch_size"]), float(plan.attrs["target_mpp"])) == (group.patch_px, group.mpp):
        return plan
    if with_regions:
        raise InputError(
            f"region encoders {[s.name for s in group.regions]} need the slide stage's grid of "
            f"{group.patch_px}-px patches at {group.mpp} µm/px, but it has {plan.attrs['patch_size']} px at "
            f"{plan.attrs['target_mpp']} µm/px", field="patching.patch_size",
            fix=f"set patching.patch_size to {group.patch_px} and patching.target_mpp to {group.mpp}")
    return plan_derived(rec["slide_id"], rec["patient_id"], rec["path"], grid_h5, slides_dir / row["tissue_geojson"],
                        group.patch_px, group.mpp, min_tissue_fraction)


def extract_shard(slides: list[dict], slides_dir: str | Path, out_dirs: dict[str, str | Path],
                  params: ExtractParams, threads: int = 1, min_tissue_fraction: float = 0.25) -> dict[str, pd.DataFrame]:
    """Extract features for the slides of one shard; write each encoder's shard directory; return the indexes.

    ``slides``: records with ``slide_id``, ``patient_id``, ``path`` (the shard's slide sheet rows);
    ``slides_dir``: the slide stage's shard directory; ``out_dirs``: encoder → output directory, one per
    configured encoder; ``min_tissue_fraction``: the slide stage's threshold, applied to derived grids.
    Raises :class:`InputError` for a bad configuration (weights, encoders); slide problems are recorded
    in the indexes instead.
    """
    start_time = time.perf_counter()
    slides_dir = Path(slides_dir)
    out_dirs = {name: Path(d) for name, d in out_dirs.items()}
    for d in out_dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    use_cpu_threads(threads)
    device = torch_device(params.device)
    enc = Encoders(params, device)
    if set(out_dirs) != set(enc.set.outputs):
        raise InputError(f"output directories for {sorted(out_dirs)} but encoders {list(enc.set.outputs)}",
                         field="pathology.encoders", fix="keep the rule's outputs and pathology.encoders in step")
    log.info("device %s, precision %s, batch %d, %d workers, %d threads; encoders %s in %d grid(s): %s",
             device, enc.precision, params.batch_size, params.num_workers, threads, ", ".join(enc.set.outputs),
             len(enc.set.groups), "; ".join(f"{g.patch_px} px @ {g.mpp} µm/px: "
                                            + ", ".join(s.name for s in g.models) for g in enc.set.groups))
    cache = ResumeCache(params.resume_dir)
    result = ShardResult(enc.set.outputs)
    grid_index = _read_slide_index(slides_dir)
    common = {id(g): enc.key_parts(params, g) for g in enc.set.groups}

    todo: list[Job] = []
    for rec in slides:
        sid, pid = rec["slide_id"], rec["patient_id"]
        row = grid_index.get(sid)
        if row is None or row["status"] != "ok":
            reason = row["reason"] if row is not None else "missing from the slide stage index"
            result.failed(sid, pid, f"slide stage failed: {reason}")
            log.warning("%s skipped: the slide stage failed (%s)", sid, reason)
            continue
        try:
            fingerprint = slide_fingerprint(rec["path"])
        except (SlideError, OSError) as e:
            result.failed(sid, pid, str(e))
            log.error("%s failed: %s", sid, e)
            continue
        for group in enc.set.groups:
            names = enc.outputs(group)
            try:
                plan = _plan_group(rec, row, slides_dir, group, min_tissue_fraction)
                if len(plan.unique) == 0:
                    raise SlideError(f"the {group.patch_px}-px grid of {sid} is empty. Fix: check the slide "
                                     "stage's QC for this slide (or lower patching.min_tissue_fraction)")
                key = slide_key(slide=sid, file=fingerprint, grid=plan.grid_digest, **common[id(group)])
            except (SlideError, OSError) as e:
                result.failed(sid, pid, str(e), names)
                log.error("%s failed for %s: %s", sid, ", ".join(names), e)
                continue
            targets = {name: out_dirs[name] / f"{sid}.h5" for name in names}
            if cache.restore(sid, key, targets):
                result.ok(sid, pid, targets)
                log.info("%s: %s resumed from %s", sid, ", ".join(names), cache.root)
            else:
                todo.append(Job(plan, key, group))

    n_tiles = sum(len(j.plan.unique) for j in todo)
    log.info("%d slide grids to compute (%d tiles), the rest resumed or skipped", len(todo), n_tiles)
    if todo:
        encode_plans(todo, enc, params, out_dirs, cache, result)
    indexes = result.write(out_dirs, [r["slide_id"] for r in slides])
    seconds = time.perf_counter() - start_time
    log.info("shard done in %.1f s (%.1f tiles/s computed)", seconds, n_tiles / max(seconds, 1e-9))
    return indexes


def encode_plans(todo: list[Job], enc: Encoders, params: ExtractParams, out_dirs: dict[str, Path],
                 cache: ResumeCache, result: ShardResult) -> None:
    """Read, encode and write the planned (slide, group) jobs; record each in ``result``.

    Batches come back from the workers in order; a job is written as soon as its last batch is encoded.
    """
    plans = [j.plan for j in todo]
    failed = torch.zeros(len(plans), dtype=torch.uint8).share_memory_()
    open_plans: dict[str, int] = {}  # slide path → jobs not finished (an S3 copy is deleted after the last)
    for plan in plans:
        open_plans[plan.path] = open_plans.get(plan.path, 0) + 1
    total, encoded = sum(len(p.unique) for p in plans), 0
    start = last_report = time.perf_counter()
    # Forked workers must not inherit a running OpenCV thread pool (it deadlocks after fork): run the
    # parent's pool down to one thread while they live (the workers then resample on one thread each).
    cv_threads = cv2.getNumThreads()
    if params.num_workers:
        cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="tessera-features-") as scratch:

            def done_with(plan: SlidePlan) -> None:
                open_plans[plan.path] -= 1
                if open_plans[plan.path] == 0:
                    forget_local(plan.path, Path(scratch))

            dataset = PatchBatches(plans, params.batch_size, [j.group.transforms for j in todo], Path(scratch), failed,
                                   cache_bytes=params.tile_cache_mb << 20)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=None, shuffle=False, num_workers=params.num_workers,
                pin_memory=enc.device.type == "cuda",
            )  # torch runs each worker on one thread
            feats: dict[int, dict[str, torch.Tensor]] = {}
            done: dict[int, int] = {}
            with torch.inference_mode():
                for batch in loader:
                    s = batch["plan"]
                    job, plan = todo[s], plans[s]
                    if failed[s]:
                        continue
                    if batch["error"]:
                        failed[s] = 1
                        feats.pop(s, None)
                        done_with(plan)
                        names = enc.outputs(job.group)
                        result.failed(plan.slide_id, plan.patient_id, batch["error"], names)
                        log.error("%s failed for %s: %s", plan.slide_id, ", ".join(names), batch["error"])
                        continue
                    if s not in feats:
                        feats[s] = {spec.name: torch.empty(len(plan.unique), spec.dim, device=enc.device)
                                    for spec in job.group.patches}
                        plan.read_info = batch["read"]
                    n = len(batch["views"][0])
                    for name, value in enc.encode_patches(TileBatch(job.group, batch["views"])).items():
                        feats[s][name][batch["start"]:batch["start"] + n] = value
                    done[s] = done.get(s, 0) + n
                    if done[s] == len(plan.unique):
                        done_with(plan)
                        _finish(plan, job.key, job.group, feats.pop(s), enc, out_dirs, cache, result)
                    encoded += n
                    if time.perf_counter() - last_report > 60:
                        last_report = time.perf_counter()
                        log.info("%d of %d tiles (%.1f tiles/s)", encoded, total, encoded / (last_report - start))
            dataset.close()
    finally:
        cv2.setNumThreads(cv_threads)


def _finish(plan: SlidePlan, key: str, group: GridGroup, feats: dict[str, torch.Tensor], enc: Encoders,
            out_dirs: dict[str, Path], cache: ResumeCache, result: ShardResult) -> None:
    """Write a (slide, group) whose tiles are all encoded; keep it for resuming; record it."""
    files = _write_slide(plan, feats, enc, group, out_dirs)
    cache.store(plan.slide_id, key, files)
    result.ok(plan.slide_id, plan.patient_id, files)
    log.info("%s: %d tiles of %d px encoded (%s), %d regions (%s level %s)", plan.slide_id, len(plan.unique),
             group.patch_px, ", ".join(s.name for s in group.patches), len(plan.region_rows),
             plan.read_info.get("reader"), plan.read_info.get("read_level"))

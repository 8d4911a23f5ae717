"""A fast tile reader: pixels of a slide's pyramid level, decoded straight from its JPEG tiles.

OpenSlide's ``read_region`` decodes, converts to premultiplied ARGB and paints through a generic path
at ~400–800 boxes/s per core; decoding the same tiles directly (the compressed bytes from the TIFF's
tile offsets, ``imagecodecs`` libjpeg-turbo with the level's JPEGTables) runs several times faster
(GUIDE §4). :class:`TileReader` does that where it is exact and falls back to OpenSlide everywhere else:

* fast path: the slide is a TIFF that OpenSlide reads as ``aperio`` or ``generic-tiff``, the level is a
  top-level tiled IFD with the size and tile size OpenSlide reports, 8-bit 3-sample contiguous JPEG in
  YCbCr, or RGB without a JFIF marker (Aperio's raw-RGB JPEG, decoded without colour conversion as
  OpenSlide does), and the box lies inside the level at whole level pixels;
* OpenSlide otherwise: another vendor or compression (JPEG 2000 SVS, NDPI, MRXS, ...), boxes crossing
  the level border or at fractional level positions (OpenSlide interpolates those), and any box touching
  a missing (zero-length) tile.

Pixels equal OpenSlide's ``read_region`` composited on white (tested on the demo slides and the real
CMU SVS). A tile that libjpeg-turbo cannot decode, or whose bytes lie past the end of the file, is a
corrupt slide: :class:`~tessera.errors.SlideError` names the level, tile and byte offset.

Tiles are decoded into the slots of a preallocated LRU :class:`TileCache` (``imagecodecs``' ``out=``):
no allocation per tile (fresh arrays cost page faults, about a third of the decode time), and patch
boxes that straddle tiles (the CMU slide's 240-px tiles under 256-px patches) decode each tile once when
read in row order. One cache can serve the successive slides a worker reads.

Only pyramid levels are read, never the label or macro images.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import imagecodecs
import numpy as np
import openslide
import tifffile

from tessera.errors import SlideError
from tessera.slides.slide import Pyramid, composite_on_white

log = logging.getLogger(__name__)

FAST_VENDORS = ("aperio", "generic-tiff")
JPEG = 7
PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR = 2, 6


@dataclass
class JpegLevel:
    """Where one pyramid level's JPEG tiles are and how to decode them."""

    level: int
    width: int
    height: int
    tile_w: int
    tile_h: int
    offsets: np.ndarray  # (n_tiles,) byte offset of each tile, row-major
    bytecounts: np.ndarray  # (n_tiles,)
    tables: bytes | None  # JPEGTables (quantisation/Huffman tables shared by all tiles)
    colorspace: int | None  # JPEG colour space passed to libjpeg (None = from the stream)

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_w)


class TileCache:
    """Decoded tiles in a preallocated buffer, least recently used evicted first.

    Slots are views of one ``nbytes`` buffer shaped for the current tile size; a different tile size (the
    next slide) re-slices the buffer and forgets its contents. Keys are (owner, level, tile index), where
    ``owner`` comes from :meth:`new_owner`, one per reader.
    """

    def __init__(self, nbytes: int = 64 << 20) -> None:
        self._buffer = np.empty(max(int(nbytes), 1), np.uint8)
        self._shape: tuple[int, int, int] | None = None
        self._slots = np.empty((0, 0, 0, 3), np.uint8)
        self._lru: OrderedDict[tuple[int, int, int], int] = OrderedDict()
        self._free: list[int] = []
        self._owners = 0

    def new_owner(self) -> int:
        self._owners += 1
        return self._owners

    def get(self, key: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
        """The slot for ``key`` and whether it already holds the tile; a miss must be filled or dropped."""
        if shape != self._shape:
            size = shape[0] * shape[1] * shape[2]
            n = max(1, self._buffer.size // size)
            if n * size > self._buffer.size:  # a budget below one tile still holds one
                self._buffer = np.empty(n * size, np.uint8)
            self._slots = self._buffer[:n * size].reshape(n, *shape)
            self._shape, self._free = shape, list(range(n - 1, -1, -1))
            self._lru.clear()
        slot = self._lru.get(key)
        if slot is not None:
            self._lru.move_to_end(key)
            return self._slots[slot], True
        slot = self._free.pop() if self._free else self._lru.popitem(last=False)[1]
        self._lru[key] = slot
        return self._slots[slot], False

    def drop(self, key: tuple[int, int, int]) -> None:
        """Forget ``key`` (its slot could not be filled)."""
        slot = self._lru.pop(key, None)
        if slot is not None:
            self._free.append(slot)


def _why_not_fast(page: tifffile.TiffPage) -> str:
    """'' when a TIFF page's tiles can be decoded exactly as OpenSlide does; else the reason."""
    checks = [
        (page.is_tiled, "not tiled"),
        (page.compression == JPEG, f"compression {page.compression!r} is not JPEG"),
        (page.bitspersample == 8 and page.samplesperpixel == 3, "not 8-bit RGB"),
        (page.planarconfig == 1 and not page.extrasamples, "not contiguous RGB"),
        (page.imagedepth == 1 and page.tiledepth == 1, "volumetric tiles"),
        (page.photometric in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR), f"photometric {page.photometric!r}"),
        (not (page.photometric == PHOTOMETRIC_RGB and page.is_jfif), "RGB JPEG with a JFIF marker"),
        (page.fillorder == 1 and page.predictor == 1, "fill order or predictor"),
    ]
    return next((reason for ok, reason in checks if not ok), "")


class TileReader:
    """Read RGB boxes of one slide's pyramid levels; see the module docstring for the fast path.

    ``fast_levels``: level → :class:`JpegLevel` decoded directly; ``fallback``: level → why OpenSlide
    reads it; ``cache``: where decoded tiles are kept (a private 64 MB one if not given). Raises
    :class:`SlideError` when the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike, cache: TileCache | None = None, fast: bool = True) -> None:
        self.path = str(path)
        try:
            self._osr = openslide.OpenSlide(self.path)
        except (openslide.OpenSlideError, OSError) as e:
            raise SlideError(f"cannot open slide {self.path}: {e}. Fix: check the file is complete "
                             "(copy it again if it was truncated)") from e
        self.dimensions = tuple(self._osr.level_dimensions)
        self.downsamples = tuple(float(d) for d in self._osr.level_downsamples)
        self.fast_levels: dict[int, JpegLevel] = {}
        self.fallback: dict[int, str] = {}
        self._fd = -1
        self._cache = cache if cache is not None else TileCache()
        self._owner = self._cache.new_owner()
        if fast:
            self._find_fast_levels()
        else:
            self.fallback = dict.fromkeys(range(len(self.dimensions)), "fast path disabled")

    def _find_fast_levels(self) -> None:
        props = self._osr.properties
        vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "")
        if vendor not in FAST_VENDORS:
            self.fallback = dict.fromkeys(range(len(self.dimensions)), f"vendor {vendor or 'unknown'}")
            return
        try:
            with tifffile.TiffFile(self.path) as tif:
                pages = [p for p in tif.pages if isinstance(p, tifffile.TiffPage) and p.is_tiled]
                for level, (w, h) in enumerate(self.dimensions):
                    tw = int(props.get(f"openslide.level[{level}].tile-width", 0))
                    th = int(props.get(f"openslide.level[{level}].tile-height", 0))
                    match = [p for p in pages if (p.imagewidth, p.imagelength, p.tilewidth, p.tilelength) == (w, h, tw, th)]
                    reason = "no single TIFF directory matches" if len(match) != 1 else _why_not_fast(match[0])
                    if reason:
                        self.fallback[level] = reason
                        continue
                    page = match[0]
                    self.fast_levels[level] = JpegLevel(
                        level, w, h, tw, th, np.asarray(page.dataoffsets, np.int64),
                        np.asarray(page.databytecounts, np.int64), page.jpegtables,
                        PHOTOMETRIC_RGB if page.photometric == PHOTOMETRIC_RGB else None,
                    )
        except Exception as e:  # an odd TIFF that OpenSlide still reads: use OpenSlide for everything
            self.fast_levels.clear()
            self.fallback = dict.fromkeys(range(len(self.dimensions)), f"TIFF structure: {type(e).__name__}: {e}")
        if self.fast_levels:
            self._fd = os.open(self.path, os.O_RDONLY)
        for level, reason in self.fallback.items():
            log.debug("%s level %d read with OpenSlide: %s", self.path, level, reason)

    def read(self, x: int, y: int, level: int, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
        """RGB (height, width, 3) uint8 of the box at ``level`` whose top-left is level-0 (x, y).

        The same pixels as OpenSlide's ``read_region`` composited on white. Written into ``out`` (a
        C-contiguous array of that shape) when given, and returned.
        """
        jl = self.fast_levels.get(level)
        if jl is not None:
            lx, ly = x / self.downsamples[level], y / self.downsamples[level]
            if lx == int(lx) and ly == int(ly) and 0 <= lx and 0 <= ly and lx + width <= jl.width and ly + height <= jl.height:
                if out is None:
                    out = np.empty((height, width, 3), np.uint8)
                if self._read_fast(jl, int(lx), int(ly), out):
                    return out
        box = self.read_openslide(x, y, level, width, height)
        if out is None:
            return box
        out[...] = box
        return out

    def read_openslide(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """The box through OpenSlide (the reference the fast path equals)."""
        try:
            rgba = np.asarray(self._osr.read_region((int(x), int(y)), level, (int(width), int(height))))
        except openslide.OpenSlideError as e:
            raise SlideError(f"cannot read pixels of {self.path} at level {level}, ({x}, {y}) {width}x{height}: "
                             f"{e}. Fix: the file is corrupt; copy or export it again") from e
        return composite_on_white(rgba)

    def _read_fast(self, jl: JpegLevel, lx: int, ly: int, out: np.ndarray) -> bool:
        """Fill ``out`` from the level's tiles; False (nothing read) if a tile is missing."""
        height, width = out.shape[:2]
        tx0, ty0 = lx // jl.tile_w, ly // jl.tile_h
        tx1, ty1 = (lx + width - 1) // jl.tile_w, (ly + height - 1) // jl.tile_h
        rows = range(ty0, ty1 + 1)
        if any(jl.bytecounts[ty * jl.tiles_across + tx] == 0 for ty in rows for tx in range(tx0, tx1 + 1)):
            return False  # a missing tile: OpenSlide knows how the vendor fills it
        for ty in rows:
            y0, y1 = max(ly, ty * jl.tile_h), min(ly + height, (ty + 1) * jl.tile_h)
            for tx in range(tx0, tx1 + 1):
                x0, x1 = max(lx, tx * jl.tile_w), min(lx + width, (tx + 1) * jl.tile_w)
                tile = self._tile(jl, ty * jl.tiles_across + tx)
                out[y0 - ly:y1 - ly, x0 - lx:x1 - lx] = tile[y0 - ty * jl.tile_h:y1 - ty * jl.tile_h,
                                                             x0 - tx * jl.tile_w:x1 - tx * jl.tile_w]
        return True

    def _tile(self, jl: JpegLevel, index: int) -> np.ndarray:
        """Tile ``index`` of a level, (tile_h, tile_w, 3), from the cache or decoded into it."""
        key = (self._owner, jl.level, index)
        slot, hit = self._cache.get(key, (jl.tile_h, jl.tile_w, 3))
        if not hit:
            try:
                data = os.pread(self._fd, int(jl.bytecounts[index]), int(jl.offsets[index]))
                self.decode_tile(jl, index, data, out=slot)
            except BaseException:
                self._cache.drop(key)
                raise
        return slot

    def decode_tile(self, jl: JpegLevel, index: int, data: bytes, out: np.ndarray | None = None) -> np.ndarray:
        """Decode the compressed bytes of tile ``index`` → (tile_h, tile_w, 3) uint8 (into ``out`` if given)."""
        where = (f"tile {index} (column {index % jl.tiles_across}, row {index // jl.tiles_across}) of level "
                 f"{jl.level} at byte {jl.offsets[index]} of {self.path}")
        if len(data) != jl.bytecounts[index]:
            raise SlideError(f"{where} lies past the end of the file (truncated?). Fix: copy the slide again")
        try:
            tile = imagecodecs.jpeg8_decode(data, tables=jl.tables, colorspace=jl.colorspace,
                                            outcolorspace=PHOTOMETRIC_RGB, shape=(jl.tile_h, jl.tile_w), out=out)
        except Exception as e:
            raise SlideError(f"corrupt JPEG in {where}: {e}. Fix: the file is damaged; copy or export it again") from e
        if tile.shape != (jl.tile_h, jl.tile_w, 3):
            raise SlideError(f"{where} decodes to shape {tile.shape}, not ({jl.tile_h}, {jl.tile_w}, 3). "
                             "Fix: the file is damaged; copy or export it again")
        return tile

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._osr.close()

    def __enter__(self) -> "TileReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PatchGeometry:
    """How a slide's patches are read: ``box`` level pixels at ``level``, resampled to ``size`` pixels.

    ``size`` = patch pixels at the target resolution; ``box`` = round(patch_size_level0 / downsample)
    at the coarsest level not coarser than the target (no detail is invented).
    """

    level: int
    box: int
    size: int

    @classmethod
    def choose(cls, reader: TileReader, patch_size_level0: int, patch_size: int) -> "PatchGeometry":
        pyramid = Pyramid(reader.dimensions, reader.downsamples)
        level = pyramid.level_for_downsample(patch_size_level0 / patch_size)
        return cls(level, max(1, round(patch_size_level0 / reader.downsamples[level])), patch_size)


def resample(box: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """A square RGB box → ``size`` × ``size`` by area averaging (each output pixel is the mean of the input
    pixels it covers, weighted by overlap; exact block means for integer factors), into ``out`` if given."""
    if box.shape[0] == size and box.shape[1] == size:
        if out is None:
            return box
        out[...] = box
        return out
    return cv2.resize(box, (size, size), dst=out, interpolation=cv2.INTER_AREA)


def read_patch(reader: TileReader, x: int, y: int, geometry: PatchGeometry, out: np.ndarray | None = None,
               scratch: np.ndarray | None = None) -> np.ndarray:
    """The patch whose level-0 top-left is (x, y), (size, size, 3) uint8 at the target resolution.

    ``out`` receives the patch; ``scratch`` (box, box, 3) holds the level pixels when they need resampling.
    """
    if geometry.box == geometry.size:
        return reader.read(x, y, geometry.level, geometry.box, geometry.box, out=out)
    box = reader.read(x, y, geometry.level, geometry.box, geometry.box, out=scratch)
    return resample(box, geometry.size, out=out)

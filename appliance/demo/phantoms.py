"""Drawing: a noisy anatomical phantom (ellipses, nodules), so lossless compressors
reach realistic ratios."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def fill_ellipse(img: np.ndarray, cx: float, cy: float, ax: float, ay: float,
                  value: float, *, add: bool = False, outside: bool = False) -> None:
    """Set (or add ``value`` to) the pixels inside (or outside) an axis-aligned ellipse.

    Works in place on the rows the ellipse spans, so no full-size float temporaries.
    """
    if ax <= 0 or ay <= 0:
        return
    rows, cols = img.shape
    r0, r1 = max(0, math.floor(cy - ay)), min(rows, math.ceil(cy + ay) + 1)
    if outside:
        r0, r1 = 0, rows
    if r0 >= r1:
        return
    dy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy) / ay
    half = ax * np.sqrt(np.clip(1.0 - dy * dy, 0.0, None))
    half[np.abs(dy) >= 1.0] = -1.0
    dx = np.abs(np.arange(cols, dtype=np.float32) + 0.5 - cx)
    mask = dx[None, :] <= half[:, None]
    if outside:
        np.logical_not(mask, out=mask)
    view = img[r0:r1]
    if add:
        np.add(view, value, out=view, where=mask)
    else:
        np.copyto(view, value, where=mask)


@dataclass(frozen=True)
class _Nodule:
    x: float  # -1..1, relative to the body's half width
    y: float
    z: float  # 0..1 along the scan
    radius: float  # relative to the image half size
    hu: float


def random_nodules(rng: np.random.Generator, count: int = 6) -> list[_Nodule]:
    return [
        _Nodule(
            x=float(rng.uniform(-0.5, 0.5)),
            y=float(rng.uniform(-0.35, 0.35)),
            z=float(rng.uniform(0.05, 0.95)),
            radius=float(rng.uniform(0.015, 0.05)),
            hu=float(rng.uniform(-50, 250)),
        )
        for _ in range(count)
    ]


def _ct_phantom(rows: int, cols: int, z: float, nodules: list[_Nodule]) -> np.ndarray:
    """Noise-free HU values (float32) of a torso-like section at ``z`` in 0..1."""
    img = np.full((rows, cols), -1000.0, dtype=np.float32)
    s = min(rows, cols) / 2.0
    cx, cy = cols / 2.0, rows / 2.0
    wave = 1.0 + 0.06 * math.sin(2 * math.pi * z * 1.7)
    bx, by = 0.72 * s * wave, 0.52 * s * wave
    fill_ellipse(img, cx, cy + 0.62 * s, 0.8 * s, 0.04 * s, 250.0)  # table
    fill_ellipse(img, cx, cy, bx, by, -100.0)  # subcutaneous fat
    fill_ellipse(img, cx, cy, 0.9 * bx, 0.88 * by, 40.0)  # soft tissue
    lung = max(0.0, math.sin(math.pi * min(1.0, z / 0.55)))
    if lung > 0.05:
        for side in (-1, 1):
            fill_ellipse(img, cx + side * 0.33 * s, cy - 0.05 * s,
                          0.24 * s * lung, 0.36 * s * lung, -850.0)
    heart = max(0.0, math.sin(math.pi * (z - 0.15) / 0.3)) if 0.15 < z < 0.45 else 0.0
    if heart > 0.05:
        fill_ellipse(img, cx + 0.08 * s, cy + 0.02 * s, 0.22 * s * heart, 0.2 * s * heart, 45.0)
    if 0.35 < z < 0.8:
        liver = math.sin(math.pi * (z - 0.35) / 0.45)
        fill_ellipse(img, cx - 0.3 * s, cy + 0.02 * s, 0.3 * s * liver, 0.28 * s * liver, 60.0)
    if 0.55 < z < 0.85:
        kidney = math.sin(math.pi * (z - 0.55) / 0.3)
        for side in (-1, 1):
            fill_ellipse(img, cx + side * 0.3 * s, cy + 0.22 * s,
                          0.08 * s * kidney, 0.12 * s * kidney, 150.0)
    fill_ellipse(img, cx - 0.05 * s, cy + 0.16 * s, 0.06 * s, 0.06 * s, 180.0)  # aorta
    fill_ellipse(img, cx, cy + 0.36 * s, 0.11 * s, 0.1 * s, 700.0)  # vertebra
    fill_ellipse(img, cx, cy + 0.36 * s, 0.04 * s, 0.04 * s, 20.0)  # spinal canal
    for n in nodules:
        dz = (z - n.z) / n.radius * 0.1
        if abs(dz) < 1.0:
            r = n.radius * s * math.sqrt(1.0 - dz * dz)
            fill_ellipse(img, cx + n.x * bx, cy + n.y * by, r, r, n.hu)
    return img


def ct_pixels(rows: int, cols: int, z: float, nodules: list[_Nodule],
               rng: np.random.Generator, *, noise_hu: float = 7.0) -> np.ndarray:
    """Stored values (uint16, 12 bits, HU + 1024) of one noisy section.

    Outside the circular reconstruction field the value is 0 (-1024 HU), as scanners pad it.
    """
    img = _ct_phantom(rows, cols, z, nodules)
    noise = rng.standard_normal((rows, cols), dtype=np.float32)
    noise *= noise_hu
    img += noise
    del noise
    img += 1024.0
    np.clip(img, 0.0, 4095.0, out=img)
    out = img.astype(np.uint16)
    del img
    fill_ellipse(out, cols / 2.0, rows / 2.0, cols / 2.0, rows / 2.0, 0, outside=True)
    return out

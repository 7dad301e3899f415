"""Local features of a photo (SIFT) and geometric verification of two photos (RANSAC inliers).

A shopper's photo of a packet shows the same printed label as the shop's photo, seen at an
angle, among other things: many local features agree on one homography. Global features blur
this (a vanilla and a strawberry yoghurt of one brand look alike); counting the keypoints that
agree on one plane does not. Measured on the 800 grocery shopper photos: packaged goods R@1 0.39
to 0.73 with verification of the top 10 (issue 12); fruit and vegetables gain nothing (no label).

Stored compactly with each product (``pack``): at most ``MAX_KEYPOINTS`` keypoints a photo, each
one row of ``PACKED_WIDTH`` bytes: the photo's index, two uint16 coordinates and a RootSIFT
descriptor quantised to uint8. The store keeps them as a uint8 multivector on disk.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

# The strongest keypoints kept per photo, and the longest side SIFT looks at. Chosen on half of
# the grocery shopper photos (eval/photo_study.py), see docs/quality.md.
MAX_KEYPOINTS = 256
MAX_SIDE = 320
# Lowe's ratio test: a match counts when its nearest descriptor is this much nearer than the next.
RATIO = 0.8
# RANSAC reprojection error, px at MAX_SIDE.
RANSAC_PX = 5.0
# RootSIFT values are at most 1 and rarely above 0.5: this scale keeps their resolution in a byte.
DESCRIPTOR_SCALE = 512.0
DESCRIPTOR_SIZE = 128
# A packed keypoint: photo index, x high and low byte, y high and low byte, descriptor.
PACKED_WIDTH = 5 + DESCRIPTOR_SIZE
MAX_PHOTOS = 256  # photos of one product whose keypoints can be told apart by a one-byte index


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoint positions (n, 2) uint16 and quantised RootSIFT descriptors (n, 128) uint8."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


EMPTY = LocalFeatures(np.zeros((0, 2), dtype=np.uint16), np.zeros((0, DESCRIPTOR_SIZE), dtype=np.uint8))
_SIFT = None


def _detector(max_keypoints: int):
    # cv2's SIFT keeps the strongest ``nfeatures`` by response; a detector is cheap to make but
    # the default one is reused (made lazily: importing this module costs no OpenCV set-up).
    global _SIFT
    if max_keypoints != MAX_KEYPOINTS:
        return cv2.SIFT_create(nfeatures=max_keypoints)
    if _SIFT is None:
        _SIFT = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS)
    return _SIFT


def extract_local_features(image: Image.Image, max_side: int = MAX_SIDE,
                           max_keypoints: int = MAX_KEYPOINTS) -> LocalFeatures:
    """The photo's strongest SIFT keypoints as RootSIFT, seen at most ``max_side`` px long."""
    gray = image.convert("L")
    scale = max_side / max(gray.size)
    if scale < 1.0:
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                           Image.Resampling.BILINEAR)
    keypoints, descriptors = _detector(max_keypoints).detectAndCompute(np.asarray(gray), None)
    if descriptors is None or not keypoints:
        return EMPTY
    keypoints, descriptors = keypoints[:max_keypoints], descriptors[:max_keypoints]
    # RootSIFT (Arandjelovic & Zisserman 2012): Hellinger distance between SIFT histograms.
    root = np.sqrt(descriptors / (descriptors.sum(axis=1, keepdims=True) + 1e-7))
    quantised = np.clip(np.rint(root * DESCRIPTOR_SCALE), 0, 255).astype(np.uint8)
    points = np.clip(np.rint([kp.pt for kp in keypoints]), 0, 65535).astype(np.uint16)
    return LocalFeatures(points, quantised)


def extract_beside(image: Image.Image) -> Future:
    """``extract_local_features(image)`` started on a background thread: a future of the features
    and the seconds they took. OpenCV lets go of Python's lock while it works, so a query photo's
    SIFT runs beside its trunks' passes instead of after them."""
    return _background().submit(_timed_extract, image)


def _timed_extract(image: Image.Image) -> tuple[LocalFeatures, float]:
    start = time.perf_counter()
    features = extract_local_features(image)
    return features, time.perf_counter() - start


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()
# Query photos whose SIFT runs at once: as many as searches are encoded at once by default
# (SearchSettings.search_threads).
_BACKGROUND_WORKERS = 4


def _background() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        # Keyed by process: a forked child inherits the pool but not its threads.
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(_BACKGROUND_WORKERS, thread_name_prefix="sift"))
        return _POOL[1]


_MATCHER = cv2.BFMatcher(cv2.NORM_L2)


def verify(query: LocalFeatures, candidate: LocalFeatures) -> int:
    """How many of the query's keypoints agree with the candidate's on one homography (RANSAC inliers)."""
    if len(query) < 4 or len(candidate) < 4:
        return 0
    pairs = _MATCHER.knnMatch(query.descriptors.astype(np.float32), candidate.descriptors.astype(np.float32), k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < 4:
        return 0
    source = query.points[[m.queryIdx for m in good]].astype(np.float32)
    target = candidate.points[[m.trainIdx for m in good]].astype(np.float32)
    _, mask = cv2.findHomography(source, target, cv2.RANSAC, RANSAC_PX)
    return int(mask.sum()) if mask is not None else 0


def pack(photos: list[LocalFeatures]) -> np.ndarray | None:
    """One product's photos' features as rows of ``PACKED_WIDTH`` uint8; None when no photo has any."""
    rows = []
    for index, features in enumerate(photos[:MAX_PHOTOS]):
        if not len(features):
            continue
        block = np.empty((len(features), PACKED_WIDTH), dtype=np.uint8)
        block[:, 0] = index
        block[:, 1:5] = features.points.astype(">u2").view(np.uint8).reshape(len(features), 4)
        block[:, 5:] = features.descriptors
        rows.append(block)
    return np.concatenate(rows) if rows else None


def unpack(rows: np.ndarray) -> list[LocalFeatures]:
    """The per-photo features ``pack`` made (photos without keypoints are left out)."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != PACKED_WIDTH:
        raise ValueError(f"packed local features must be (n, {PACKED_WIDTH}), got {rows.shape}")
    rows = rows.astype(np.uint8)
    out = []
    for index in np.unique(rows[:, 0]):
        block = rows[rows[:, 0] == index]
        points = np.ascontiguousarray(block[:, 1:5]).view(">u2").reshape(len(block), 2).astype(np.uint16)
        out.append(LocalFeatures(points, np.ascontiguousarray(block[:, 5:])))
    return out


def best_inliers(query: LocalFeatures, photos: list[LocalFeatures]) -> int:
    """The most inliers of the query photo against any of a product's photos."""
    return max((verify(query, photo) for photo in photos), default=0)


def best_inliers_of_each(query: LocalFeatures, products: list[list[LocalFeatures]]) -> list[int]:
    """``best_inliers`` of the query against each product's photos, the products spread over the
    background threads (OpenCV's matching and RANSAC let go of Python's lock): the verification
    of a query's top candidates is one core's work per candidate otherwise."""
    if len(products) < 2:
        return [best_inliers(query, photos) for photos in products]
    return list(_background().map(lambda photos: best_inliers(query, photos), products))

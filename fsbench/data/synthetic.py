"""Procedural street scenes: the embedded default dataset, nothing downloaded, nothing on disk.

Every scene is drawn from a seeded random generator, in perspective: sky, a skyline of buildings
and tree lines, a road with lane markings running to a vanishing point, sidewalks with curbs, grass
or hedges or facades beyond them, and poles with traffic signs, trees, cars and persons whose size
follows their distance. Colours, textures and lighting vary per scene and per object.

Labels are Cityscapes train ids (0 road, 1 sidewalk, 2 building, 5 pole, 7 traffic sign,
8 vegetation, 9 terrain, 10 sky, 11 person, 13 car); the other ids never occur.

The ``anomaly`` split pastes objects that the other splits never contain: star, ring, cross, blob
and cargo-box shapes in saturated colours or checker, stripe and dot textures (and some in dull
inlier-like colours), at several sizes, some small and far down the road. Its ``anomaly`` label
follows Fishyscapes: 0 inlier, 1 anomaly, 255 void (a band along the image border).

Splits are disjoint by seed: scene ``i`` of split ``s`` is drawn from the random stream
``numpy.random.SeedSequence([seed, SPLIT_IDS[s], i])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = (
    0,
    1,
    2,
    5,
    7,
    8,
    9,
    10,
    11,
    13,
)
CLASSES_PRESENT = (ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR)
IGNORE = 255
SPLIT_IDS = {"train": 0, "val": 1, "anomaly": 2}


@dataclass
class Scene:
    """One rendered scene.

    image:   uint8 [H, W, 3] RGB.
    label:   uint8 [H, W] Cityscapes train ids, 255 on anomalies.
    anomaly: uint8 [H, W] 0 inlier / 1 anomaly / 255 void, or None outside the anomaly split.
    """

    image: np.ndarray
    label: np.ndarray
    anomaly: np.ndarray | None


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1], float32 [H, W], with about ``cells`` features along the height."""
    rows = max(2, cells)
    cols = max(2, int(round(cells * width / height)))
    grid = torch.from_numpy(rng.random((1, 1, rows, cols), dtype=np.float32))
    up = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
    return up[0, 0].clamp_(0, 1).numpy()


class _Canvas:
    """Image, label and anomaly mask being painted, with shared noise fields for textures."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.h, self.w = height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.label = np.full((height, width), IGNORE, np.uint8)
        self.anomaly = np.zeros((height, width), np.uint8)
        self.coarse = _smooth_noise(rng, height, width, 6) - 0.5
        self.medium = _smooth_noise(rng, height, width, 24) - 0.5
        self.fine = rng.random((height, width), dtype=np.float32) - 0.5
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.yy, self.xx = yy + 0.5, xx + 0.5

    def texture(self, rgb, coarse: float, medium: float, fine: float) -> np.ndarray:
        """A full-frame texture of a base colour modulated by the shared noise fields."""
        shade = 1 + coarse * self.coarse + medium * self.medium + fine * self.fine
        return np.asarray(rgb, np.float32)[None, None, :] * shade[..., None]

    def paint(self, mask: np.ndarray, colour: np.ndarray, label: int, anomaly: int = 0) -> None:
        """Paint ``colour`` (an [H, W, 3] field or one RGB triple) where ``mask`` holds."""
        colour = np.broadcast_to(np.asarray(colour, np.float32), self.image.shape)
        self.image[mask] = colour[mask]
        self.label[mask] = label
        self.anomaly[mask] = anomaly


def _jitter(rng: np.random.Generator, rgb, amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 1)


class _Layout:
    """The perspective geometry of a scene: horizon, vanishing point, road and sidewalk edges."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.horizon = height * rng.uniform(0.36, 0.48)
        self.vanish_x = width * rng.uniform(0.38, 0.62)
        self.road_left = width * rng.uniform(-0.25, 0.2)
        self.road_right = width * rng.uniform(0.8, 1.25)
        self.walk_left = width * rng.uniform(0.12, 0.3)
        self.walk_right = width * rng.uniform(0.12, 0.3)

    def depth(self, y):
        """0 at the horizon, 1 at the bottom row: the scale of an object standing at row y."""
        return np.clip((y - self.horizon) / (self.h - self.horizon), 0, 1)

    def road_edges(self, y):
        t = self.depth(y)
        return (
            self.vanish_x + (self.road_left - self.vanish_x) * t,
            self.vanish_x + (self.road_right - self.vanish_x) * t,
        )

    def walk_edges(self, y):
        left, right = self.road_edges(y)
        t = self.depth(y)
        return left - self.walk_left * t, right + self.walk_right * t


def _paint_sky(c: _Canvas, rng) -> None:
    overcast = rng.random() < 0.3
    top = _jitter(rng, (0.55, 0.6, 0.65) if overcast else (0.25, 0.45, 0.85), 0.07)
    bottom = _jitter(rng, (0.75, 0.77, 0.8) if overcast else (0.65, 0.78, 0.95), 0.05)
    t = (c.yy / c.h)[..., None]
    clouds = np.clip(c.coarse * rng.uniform(0.5, 1.5) + 0.3, 0, 1)[..., None] * 0.35
    sky = top * (1 - t) + bottom * t
    sky = sky * (1 - clouds) + clouds * 0.95 + 0.01 * c.fine[..., None]
    c.paint(np.ones((c.h, c.w), bool), sky, SKY)


def _paint_skyline(c: _Canvas, rng, lay: _Layout) -> None:
    """Blocks of buildings and tree lines standing on the horizon, taller towards the sides."""
    x = 0.0
    while x < c.w:
        block_w = c.w * rng.uniform(0.06, 0.22)
        centre = abs((x + block_w / 2) / c.w - lay.vanish_x / c.w)
        top = lay.horizon - c.h * rng.uniform(0.08, 0.3) * (0.6 + 1.6 * centre)
        cols = (c.xx >= x) & (c.xx < x + block_w)
        if rng.random() < 0.78:
            mask = cols & (c.yy >= top) & (c.yy < lay.horizon + 1)
            _paint_facade(c, rng, mask, x, top)
        else:
            ragged = top + c.medium * c.h * 0.12
            mask = cols & (c.yy >= ragged) & (c.yy < lay.horizon + 1)
            _paint_vegetation(c, rng, mask)
        x += block_w


def _paint_facade(c: _Canvas, rng, mask, x0: float, y0: float) -> None:
    base = rng.choice(
        [
            (0.55, 0.52, 0.48),
            (0.62, 0.38, 0.3),
            (0.75, 0.7, 0.6),
            (0.45, 0.45, 0.47),
            (0.8, 0.78, 0.74),
        ]
    )
    facade = c.texture(_jitter(rng, base, 0.08), 0.25, 0.2, 0.12)
    pitch_x = c.w * rng.uniform(0.02, 0.045)
    pitch_y = c.h * rng.uniform(0.04, 0.08)
    fill = rng.uniform(0.4, 0.7)
    windows = (((c.xx - x0) % pitch_x) < pitch_x * fill) & (
        ((c.yy - y0) % pitch_y) < pitch_y * fill
    )
    glass = c.texture(_jitter(rng, (0.2, 0.25, 0.3), 0.08), 0.3, 0.3, 0.1)
    facade = np.where(windows[..., None], glass, facade)
    c.paint(mask, facade, BUILDING)


def _paint_vegetation(c: _Canvas, rng, mask) -> None:
    green = _jitter(rng, rng.choice([(0.2, 0.4, 0.15), (0.3, 0.45, 0.2), (0.15, 0.3, 0.12)]), 0.06)
    leaves = c.texture(green, 0.3, 0.9, 0.5)
    c.paint(mask, leaves, VEGETATION)


def _paint_ground(c: _Canvas, rng, lay: _Layout) -> None:
    below = c.yy >= lay.horizon
    road_l, road_r = lay.road_edges(c.yy)
    walk_l, walk_r = lay.walk_edges(c.yy)

    for side, outside in (("left", c.xx < walk_l), ("right", c.xx >= walk_r)):
        region = below & outside
        kind = rng.choice(["building", "vegetation", "terrain"], p=[0.45, 0.25, 0.3])
        if kind == "building":
            _paint_facade(c, rng, region, 0.0 if side == "left" else c.w, lay.horizon)
        elif kind == "vegetation":
            _paint_vegetation(c, rng, region)
        else:
            grass = _jitter(rng, rng.choice([(0.45, 0.55, 0.25), (0.55, 0.5, 0.3)]), 0.06)
            c.paint(region, c.texture(grass, 0.3, 0.5, 0.4), TERRAIN)

    walk = below & (c.xx >= walk_l) & (c.xx < walk_r) & ~((c.xx >= road_l) & (c.xx < road_r))
    paving = _jitter(
        rng, rng.choice([(0.62, 0.6, 0.58), (0.6, 0.45, 0.4), (0.7, 0.66, 0.58)]), 0.05
    )
    slabs = c.texture(paving, 0.2, 0.15, 0.1)
    # Joints between paving slabs: lines at equal depth steps plus lines across the walk.
    depth = np.log(np.maximum(c.yy - lay.horizon, 1e-3))
    joints = (depth * rng.uniform(6, 10)) % 1 < 0.12
    slabs = np.where(joints[..., None], slabs * 0.75, slabs)
    curb = (np.abs(c.xx - road_l) < 1 + 2 * lay.depth(c.yy)) | (
        np.abs(c.xx - road_r) < 1 + 2 * lay.depth(c.yy)
    )
    slabs = np.where(curb[..., None], slabs * 1.15, slabs)
    c.paint(walk, np.clip(slabs, 0, 1), SIDEWALK)

    road = below & (c.xx >= road_l) & (c.xx < road_r)
    asphalt = c.texture(_jitter(rng, (0.32, 0.32, 0.34), 0.06), 0.35, 0.25, 0.25)
    centre = lay.vanish_x + (
        rng.uniform(0.35, 0.65) * (lay.road_left + lay.road_right) - lay.vanish_x
    )
    centre_x = lay.vanish_x + (centre - lay.vanish_x) * lay.depth(c.yy)
    half_width = 0.4 + c.w * 0.006 * lay.depth(c.yy)
    dashes = (depth * rng.uniform(3, 5)) % 1 < 0.55
    marking = (np.abs(c.xx - centre_x) < half_width) & dashes
    paint = np.asarray(rng.choice([(0.9, 0.9, 0.88), (0.9, 0.8, 0.3)]), np.float32)
    asphalt = np.where(marking[..., None], paint * (1 + 0.1 * c.fine[..., None]), asphalt)
    c.paint(road, asphalt, ROAD)


def _disc(c: _Canvas, cy: float, cx: float, ry: float, rx: float):
    return ((c.yy - cy) / max(ry, 0.5)) ** 2 + ((c.xx - cx) / max(rx, 0.5)) ** 2 <= 1


def _box(c: _Canvas, top: float, bottom: float, left: float, right: float):
    return (c.yy >= top) & (c.yy < bottom) & (c.xx >= left) & (c.xx < right)


def _paint_pole(c: _Canvas, rng, lay: _Layout, base_y: float, x: float) -> None:
    t = lay.depth(base_y)
    height = c.h * 0.75 * t + 2
    width = max(2.0, c.w * 0.014 * t)
    grey = _jitter(rng, (0.45, 0.45, 0.45), 0.1)
    c.paint(_box(c, base_y - height, base_y, x - width / 2, x + width / 2), grey, POLE)
    if rng.random() < 0.6:
        size = max(3.0, c.h * 0.12 * t)
        cy = base_y - height + size
        shape = rng.integers(3)
        if shape == 0:
            mask = _disc(c, cy, x, size / 2, size / 2)
        elif shape == 1:
            mask = _box(c, cy - size / 2, cy + size / 2, x - size * 0.7, x + size * 0.7)
        else:  # a triangle pointing up
            rel = (c.yy - (cy - size / 2)) / size
            mask = (rel >= 0) & (rel < 1) & (np.abs(c.xx - x) < rel * size * 0.6)
        colour = rng.choice([(0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.9, 0.85, 0.2), (0.9, 0.9, 0.9)])
        sign = c.texture(_jitter(rng, colour, 0.05), 0.0, 0.1, 0.1)
        inner = _disc(c, cy, x, size / 4, size / 4)
        sign = np.where(inner[..., None], 0.95, sign)
        c.paint(mask, sign, SIGN)


def _paint_tree(c: _Canvas, rng, lay: _Layout, base_y: float, x: float) -> None:
    t = lay.depth(base_y)
    height = c.h * 0.8 * t + 3
    trunk_w = max(1.0, c.w * 0.01 * t)
    crown_r = height * rng.uniform(0.25, 0.4)
    trunk = _box(c, base_y - height * 0.6, base_y, x - trunk_w / 2, x + trunk_w / 2)
    crown = _disc(c, base_y - height + crown_r, x, crown_r, crown_r * rng.uniform(0.8, 1.3))
    crown &= (
        c.medium * 2.2
        + (1 - np.hypot((c.yy - base_y + height - crown_r), (c.xx - x)) / max(crown_r, 1))
        > 0.05
    )
    c.paint(trunk, _jitter(rng, (0.35, 0.25, 0.15), 0.05), VEGETATION)
    _paint_vegetation(c, rng, crown)


def _paint_car(c: _Canvas, rng, lay: _Layout, base_y: float, x: float) -> None:
    t = lay.depth(base_y)
    width = c.w * 0.32 * t + 3
    height = width * rng.uniform(0.55, 0.75)
    palette = [
        (0.8, 0.8, 0.82),
        (0.1, 0.1, 0.12),
        (0.5, 0.5, 0.52),
        (0.6, 0.1, 0.1),
        (0.15, 0.2, 0.45),
        (0.3, 0.35, 0.3),
    ]
    paint = c.texture(_jitter(rng, palette[rng.integers(len(palette))], 0.05), 0.1, 0.15, 0.1)
    body = _box(c, base_y - height * 0.6, base_y - height * 0.12, x - width / 2, x + width / 2)
    cabin_top = base_y - height
    rel = (c.yy - cabin_top) / (height * 0.4)
    cabin = (rel >= 0) & (rel < 1) & (np.abs(c.xx - x) < width * (0.3 + 0.15 * rel))
    glass = cabin & (rel > 0.15) & (np.abs(c.xx - x) < width * (0.25 + 0.15 * rel))
    wheels = _disc(c, base_y - height * 0.12, x - width * 0.32, height * 0.14, width * 0.1)
    wheels |= _disc(c, base_y - height * 0.12, x + width * 0.32, height * 0.14, width * 0.1)
    c.paint(body | cabin, paint, CAR)
    c.paint(glass, c.texture((0.15, 0.18, 0.22), 0.0, 0.3, 0.1), CAR)
    c.paint(wheels, (0.06, 0.06, 0.06), CAR)
    lights = _box(
        c, base_y - height * 0.45, base_y - height * 0.35, x - width * 0.48, x - width * 0.36
    ) | _box(c, base_y - height * 0.45, base_y - height * 0.35, x + width * 0.36, x + width * 0.48)
    c.paint(lights, (0.9, 0.85, 0.6) if rng.random() < 0.5 else (0.75, 0.1, 0.1), CAR)


def _paint_person(c: _Canvas, rng, lay: _Layout, base_y: float, x: float) -> None:
    t = lay.depth(base_y)
    height = c.h * 0.5 * t + 5
    width = height * rng.uniform(0.25, 0.35)
    skin = _jitter(rng, rng.choice([(0.9, 0.75, 0.6), (0.6, 0.42, 0.3), (0.35, 0.25, 0.18)]), 0.04)
    shirt = _jitter(rng, rng.random(3) * 0.8 + 0.1, 0.0)
    trousers = _jitter(
        rng, rng.choice([(0.15, 0.15, 0.3), (0.2, 0.2, 0.2), (0.45, 0.4, 0.3)]), 0.05
    )
    head_r = height * 0.09
    head = _disc(c, base_y - height + head_r, x, head_r, head_r * 0.85)
    torso = _box(
        c, base_y - height + 2 * head_r, base_y - height * 0.45, x - width / 2, x + width / 2
    )
    stride = width * rng.uniform(0.0, 0.35)
    leg_w = width * 0.38
    legs = _box(c, base_y - height * 0.45, base_y, x - stride - leg_w, x - stride + 0.1) | _box(
        c, base_y - height * 0.45, base_y, x + stride - 0.1, x + stride + leg_w
    )
    c.paint(legs, c.texture(trousers, 0.0, 0.2, 0.1), PERSON)
    c.paint(torso, c.texture(shirt, 0.0, 0.2, 0.1), PERSON)
    c.paint(head, skin, PERSON)


# Colours no inlier object has (saturated, "unnatural"), and dull ones for lost-cargo look-alikes.
_NOVEL_COLOURS = [
    (1.0, 0.0, 0.9),
    (0.0, 1.0, 0.3),
    (1.0, 0.5, 0.0),
    (0.0, 0.9, 1.0),
    (0.6, 0.0, 1.0),
    (1.0, 1.0, 0.0),
    (1.0, 0.3, 0.5),
]
_DULL_COLOURS = [(0.55, 0.4, 0.25), (0.4, 0.38, 0.35), (0.7, 0.6, 0.45), (0.3, 0.3, 0.32)]


def _anomaly_shape(c: _Canvas, rng, cy: float, cx: float, size: float):
    dy, dx = (c.yy - cy) / size, (c.xx - cx) / size
    r, angle = np.hypot(dy, dx), np.arctan2(dy, dx)
    kind = rng.choice(["star", "ring", "cross", "blob", "box", "diamond"])
    if kind == "star":
        spikes = rng.integers(4, 8)
        return r < 0.5 + 0.35 * np.cos(spikes * angle + rng.uniform(0, math.pi))
    if kind == "ring":
        return (r < 0.85) & (r > rng.uniform(0.35, 0.55))
    if kind == "cross":
        arm = rng.uniform(0.15, 0.3)
        return ((np.abs(dx) < arm) & (np.abs(dy) < 0.85)) | (
            (np.abs(dy) < arm) & (np.abs(dx) < 0.85)
        )
    if kind == "blob":
        return r < 0.55 + 0.9 * c.medium + 0.3 * np.sin(3 * angle + rng.uniform(0, 6))
    if kind == "box":
        return (np.abs(dx) < rng.uniform(0.5, 0.9)) & (np.abs(dy) < rng.uniform(0.35, 0.7))
    return np.abs(dx) + np.abs(dy) < 0.85


def _anomaly_texture(c: _Canvas, rng, size: float) -> np.ndarray:
    dull = rng.random() < 0.3
    palette = _DULL_COLOURS if dull else _NOVEL_COLOURS
    first = np.asarray(palette[rng.integers(len(palette))], np.float32)
    second = np.asarray(_NOVEL_COLOURS[rng.integers(len(_NOVEL_COLOURS))], np.float32)
    period = max(2.0, size * rng.uniform(0.15, 0.4))
    kind = rng.choice(["solid", "checker", "stripes", "dots"], p=[0.4, 0.2, 0.2, 0.2])
    if kind == "solid" or dull:
        pattern = np.zeros((c.h, c.w), bool)
    elif kind == "checker":
        pattern = ((c.yy // period + c.xx // period) % 2).astype(bool)
    elif kind == "stripes":
        angle = rng.uniform(0, math.pi)
        pattern = ((c.xx * math.cos(angle) + c.yy * math.sin(angle)) // period % 2).astype(bool)
    else:
        pattern = np.hypot(c.yy % period - period / 2, c.xx % period - period / 2) < period / 3
    colour = np.where(pattern[..., None], second, first)
    return colour * (1 + 0.15 * c.medium[..., None] + 0.08 * c.fine[..., None])


def _paste_anomalies(c: _Canvas, rng, lay: _Layout) -> None:
    for _ in range(rng.integers(1, 4)):
        on_road = rng.random() < 0.75
        base_y = lay.horizon + (c.h - lay.horizon) * rng.uniform(0.04, 0.95) ** 1.5
        left, right = lay.road_edges(base_y) if on_road else lay.walk_edges(base_y)
        left, right = max(left, 0.0), min(right, float(c.w))
        x = rng.uniform(left, right) if right > left else c.w / 2
        size = (c.h * rng.uniform(0.08, 0.3)) * lay.depth(base_y) + rng.uniform(1.5, 3)
        mask = _anomaly_shape(c, rng, base_y - size * 0.8, x, size)
        c.paint(mask, _anomaly_texture(c, rng, size), IGNORE, anomaly=1)


def _finish(c: _Canvas, rng) -> np.ndarray:
    """Lighting, colour cast, sensor noise and a slight blur, then quantise to uint8."""
    image = c.image * rng.uniform(0.7, 1.25) + rng.uniform(-0.08, 0.08)
    image = image * _jitter(rng, (1, 1, 1), 0.08)
    image = image + rng.uniform(0.005, 0.04) * rng.standard_normal(image.shape, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    tensor = F.avg_pool2d(F.pad(tensor, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 0.5 + (
        tensor * 0.5
    )
    out = tensor[0].permute(1, 2, 0).numpy()
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_scene(
    rng: np.random.Generator,
    height: int = 128,
    width: int = 256,
    anomalies: bool = False,
    void_border: float = 0.03,
) -> Scene:
    """Draw one street scene; with ``anomalies`` also paste novel objects and mark a void border."""
    if height < 16 or width < 16:
        raise ValueError(f"synthetic scenes need at least 16x16 pixels, got {height}x{width}")
    c = _Canvas(rng, height, width)
    lay = _Layout(rng, height, width)
    _paint_sky(c, rng)
    _paint_skyline(c, rng, lay)
    _paint_ground(c, rng, lay)

    objects = []
    for _ in range(rng.integers(2, 6)):
        objects.append((_paint_pole if rng.random() < 0.6 else _paint_tree, "walk"))
    objects += [(_paint_car, "road")] * int(rng.integers(0, 5))
    objects += [(_paint_person, "walk")] * int(rng.integers(0, 4))
    objects += [(_paint_person, "road")] * int(rng.random() < 0.3)
    placed = []
    for painter, where in objects:
        base_y = lay.horizon + (c.h - lay.horizon) * rng.uniform(0.05, 1.0) ** 1.3
        left, right = lay.road_edges(base_y)
        if where == "walk":
            walk_l, walk_r = lay.walk_edges(base_y)
            left, right = (walk_l, left) if rng.random() < 0.5 else (right, walk_r)
        x = rng.uniform(left, right)
        if -c.w * 0.1 < x < c.w * 1.1:
            placed.append((base_y, painter, x))
    for base_y, painter, x in sorted(placed, key=lambda item: item[0]):  # far first
        painter(c, rng, lay, base_y, x)

    anomaly = None
    if anomalies:
        _paste_anomalies(c, rng, lay)
        anomaly = c.anomaly.copy()
        band = max(1, int(round(void_border * min(height, width))))
        anomaly[:band], anomaly[-band:], anomaly[:, :band], anomaly[:, -band:] = (IGNORE,) * 4
    return Scene(image=_finish(c, rng), label=c.label.copy(), anomaly=anomaly)


class SyntheticScenes(Dataset):
    """A split of procedural street scenes, generated on the fly from ``(seed, split, index)``.

    Items are dicts with ``image`` float32 [3, H, W] in [0, 1], ``label`` int64 [H, W] (train ids,
    255 = ignore), ``name`` str, and on the ``anomaly`` split ``anomaly`` uint8 [H, W]
    (0 inlier, 1 anomaly, 255 void).

    Args:
        split: ``train``, ``val`` or ``anomaly``.
        length: number of scenes in the split.
        height, width: image size in pixels.
        seed: base seed; scenes of different splits never share a random stream.
        cache: keep generated scenes in memory (uint8, 4 bytes per pixel) for later epochs.
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 1000,
        height: int = 128,
        width: int = 256,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown synthetic split {split!r}; choose one of {list(SPLIT_IDS)}")
        if length < 1:
            raise ValueError(f"synthetic split length must be >= 1, got {length}")
        self.split, self.length, self.height, self.width, self.seed = (
            split,
            length,
            height,
            width,
            seed,
        )
        self._cache: dict[int, Scene] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(f"scene {index} out of range for a split of {self.length}")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, SPLIT_IDS[self.split], index])
        )
        scene = render_scene(rng, self.height, self.width, anomalies=self.split == "anomaly")
        if self._cache is not None:
            self._cache[index] = scene
        return scene

    def __getitem__(self, index: int) -> dict:
        scene = self.scene(index)
        item = {
            "image": torch.from_numpy(scene.image).permute(2, 0, 1).float().div_(255),
            "label": torch.from_numpy(scene.label).long(),
            "name": f"synthetic_{self.split}_{index:05d}",
        }
        if scene.anomaly is not None:
            item["anomaly"] = torch.from_numpy(scene.anomaly)
        return item

"""Drawing the parts of the synthetic line: plates and PCBs, and the defects they carry (OpenCV)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from daemon.synthetic.params import CLASSES_BY_KIND, DENT, MISSING_COMPONENT, SCRATCH, STAIN, Image, LineParams

Mask = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Geometry:
    part_id: int
    kind: str
    belt_x: int  # belt coordinate of the part's right edge: on screen it is at offset + width - belt_x
    y: int
    w: int
    h: int
    defective: bool


@dataclass(frozen=True, slots=True)
class Part:
    geo: Geometry
    sprite: Image
    mask: npt.NDArray[np.bool_]  # HxWx1, the part's silhouette (plates have chamfered corners)
    defects: tuple[tuple[int, int, int, int, int], ...]  # (class_id, x1, y1, x2, y2) in sprite pixels


def rng_for(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))



def draw_belt(rng: np.random.Generator, w: int, h: int, s: float) -> Image:
    """A belt texture one cleat period wider than the frame, so each frame is a slice of it."""
    period = max(8, round(80 * s))
    top, bottom = round(30 * s), h - round(30 * s)
    tile = np.clip(58 + rng.normal(0, 5, (h, period)), 0, 255)
    tile[:, : max(2, round(6 * s))] -= 18  # cleat
    reps = (w + period) // period + 1
    belt = np.repeat(np.tile(tile, (1, reps))[:, : w + period, None], 3, axis=2)
    belt[:top] = belt[bottom:] = 0
    belt[:top] += np.array([150, 152, 155]) + rng.normal(0, 3, (top, w + period, 1))  # steel side rails
    belt[bottom:] += np.array([150, 152, 155]) + rng.normal(0, 3, (h - bottom, w + period, 1))
    return np.clip(belt, 0, 255).astype(np.uint8)


Rect = tuple[int, int, int, int]


def make_part(rng: np.random.Generator, geo: Geometry, p: LineParams, s: float) -> Part:
    """Draw one part. Defect spots are reserved before the optional features (bolts, chips, passives), so a
    defective part always has room for its defects; the features then fill whatever space is left."""
    w, h = geo.w, geo.h
    mask = np.zeros((h, w), np.uint8)
    occupied: list[Rect] = []
    plate = geo.kind == "plate"
    sprite = _plate_base(rng, mask, occupied, s) if plate else _pcb_base(rng, mask, occupied, s)
    spots: list[tuple[int, int, int, int]] = []  # (class_id, cx, cy, size)
    if geo.defective:
        count = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)
        classes = CLASSES_BY_KIND[geo.kind]
        for _ in range(count):
            class_id = classes[int(rng.integers(0, len(classes)))]
            size = min(int(rng.integers(p.min_defect_px, p.max_defect_px + 1)), int(0.6 * min(w, h)))
            spot = _free_spot(rng, w, h, size, round(8 * s), occupied)
            while spot is None and size > 12:  # a crowded part gets a smaller defect rather than none
                size = max(12, round(size * 0.75))
                spot = _free_spot(rng, w, h, size, round(8 * s), occupied)
            if spot is not None:
                half = (size + 1) // 2
                occupied.append((spot[0] - half, spot[1] - half, spot[0] + half, spot[1] + half))
                spots.append((class_id, spot[0], spot[1], size))
    if plate:
        _plate_bolts(rng, sprite, occupied, s)
    else:
        _pcb_components(rng, sprite, occupied, s)
    defects: list[tuple[int, int, int, int, int]] = []
    for class_id, cx, cy, size in spots:
        local = np.zeros((h, w), np.uint8)
        _DRAW_DEFECT[class_id](rng, sprite, local, cx, cy, size, geo.kind)
        bx, by, bw, bh = cv2.boundingRect(local)
        defects.append((class_id, bx, by, bx + bw, by + bh))
    sprite.flags.writeable = False
    return Part(geo, sprite, (mask > 0)[:, :, None], tuple(defects))


def _free_spot(
    rng: np.random.Generator, w: int, h: int, size: int, margin: int, occupied: list[Rect]
) -> tuple[int, int] | None:
    """A centre for a size x size square inside the part that keeps clear of features and other defects."""
    half = (size + 1) // 2
    lo_x, hi_x, lo_y, hi_y = margin + half, w - margin - half, margin + half, h - margin - half
    if lo_x > hi_x or lo_y > hi_y:
        return None
    for _ in range(40):
        cx, cy = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
        box = (cx - half - 4, cy - half - 4, cx + half + 4, cy + half + 4)
        if not any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in occupied):
            return cx, cy
    return None


def _color(rng: np.random.Generator, base: tuple[int, int, int], spread: int) -> tuple[int, int, int]:
    b, g, r = (int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)
    return b, g, r


def _plate_base(rng: np.random.Generator, mask: Mask, occupied: list[Rect], s: float) -> Image:
    """Brushed steel with chamfered corners, bevelled edges, four through holes and an engraved serial."""
    h, w = mask.shape
    base = float(rng.uniform(145, 200))
    # Brushed metal: streaks along x, made by smearing per-row and per-pixel noise horizontally.
    grain = (base + rng.normal(0, 5, (h, 1)) + rng.normal(0, 4, (h, w))).astype(np.float32)
    tex = cv2.blur(grain, (max(3, round(21 * s)), 1))
    tint = np.array([1.0 + rng.uniform(0, 0.05), 1.0, 1.0 - rng.uniform(0, 0.05)], np.float32)
    sprite: Image = np.clip(tex[:, :, None] * tint, 0, 255).astype(np.uint8)
    c = round(rng.uniform(6, 16) * s)
    corners = [(c, 0), (w - 1 - c, 0), (w - 1, c), (w - 1, h - 1 - c), (w - 1 - c, h - 1), (c, h - 1), (0, h - 1 - c)]
    outline = np.array([*corners, (0, c)], np.int32)
    cv2.fillPoly(mask, [outline], 255)
    light, dark = (int(min(255, base + 45)),) * 3, (int(base * 0.55),) * 3
    cv2.polylines(sprite, [outline[[7, 0, 1]]], False, light, max(1, round(2 * s)))
    cv2.polylines(sprite, [outline[[3, 4, 5]]], False, dark, max(1, round(2 * s)))
    r = max(3, round(rng.uniform(6, 9) * s))
    inset = round(8 * s) + r
    for hx, hy in ((inset, inset), (w - inset, inset), (inset, h - inset), (w - inset, h - inset)):
        cv2.circle(sprite, (hx, hy), r, (42, 42, 44), -1, cv2.LINE_AA)  # through hole: belt shows through
        cv2.circle(sprite, (hx, hy), r, dark, 1, cv2.LINE_AA)
        occupied.append((hx - r, hy - r, hx + r, hy + r))
    text = f"LW-{int(rng.integers(1000, 9999))}"
    scale = 0.35 * s
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    tx, ty = round(w / 2 - tw / 2), h - round(10 * s)
    cv2.putText(sprite, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (int(base * 0.7),) * 3, 1, cv2.LINE_AA)
    occupied.append((tx, ty - th, tx + tw, ty + 2))
    return sprite


def _plate_bolts(rng: np.random.Generator, sprite: Image, occupied: list[Rect], s: float) -> None:
    """Up to two socket-head cap screws: dark round heads with a darker hex socket and a rim highlight.

    Distractors on purpose, but unlike any defect at the model's input scale (half the frame): an earlier
    light-grey hex head with a bright centre was, at 8-12 px, too close to a short bright scratch.
    """
    h, w = sprite.shape[:2]
    for _ in range(int(rng.integers(0, 3))):
        rb = max(5, round(rng.uniform(9, 13) * s))
        spot = _free_spot(rng, w, h, 2 * rb, round(6 * s), occupied)
        if spot is None:
            continue
        cv2.circle(sprite, spot, rb, _color(rng, (62, 64, 68), 8), -1, cv2.LINE_AA)
        cv2.circle(sprite, spot, rb, (118, 120, 124), 1, cv2.LINE_AA)
        rs = max(2, round(rb * 0.45))
        angles = rng.uniform(0, np.pi / 3) + np.arange(6) * np.pi / 3
        socket = np.stack([spot[0] + rs * np.cos(angles), spot[1] + rs * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(sprite, [socket], (24, 24, 26), cv2.LINE_AA)
        occupied.append((spot[0] - rb, spot[1] - rb, spot[0] + rb, spot[1] + rb))


def _pcb_base(rng: np.random.Generator, mask: Mask, occupied: list[Rect], s: float) -> Image:
    """Green solder mask over copper traces, with four gold-plated mounting holes."""
    h, w = mask.shape
    mask[:] = 255
    green = _color(rng, (45, 115, 35), 12)
    sprite = np.empty((h, w, 3), np.uint8)
    sprite[:] = green
    trace = tuple(min(255, c + 40) for c in green)
    for _ in range(int(rng.integers(6, 14))):  # copper traces under the solder mask: lighter green
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        points = [(x, y)]
        for _ in range(int(rng.integers(2, 5))):
            step = int(rng.integers(15, 60) * s) * int(rng.choice([-1, 1]))
            x, y = (x + step, y) if rng.random() < 0.5 else (x, y + step)
            points.append((x, y))
        cv2.polylines(sprite, [np.array(points, np.int32)], False, trace, max(1, round(2 * s)))
    r = max(3, round(6 * s))
    inset = round(6 * s) + r
    for hx, hy in ((inset, inset), (w - inset, inset), (inset, h - inset), (w - inset, h - inset)):
        cv2.circle(sprite, (hx, hy), r, (60, 165, 215), -1, cv2.LINE_AA)
        cv2.circle(sprite, (hx, hy), max(1, r // 2), (40, 40, 40), -1, cv2.LINE_AA)
        occupied.append((hx - r, hy - r, hx + r, hy + r))
    return sprite


def _pcb_components(rng: np.random.Generator, sprite: Image, occupied: list[Rect], s: float) -> None:
    """One to three mounted ICs (the look a missing component lacks) and a few passives."""
    h, w = sprite.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        size = round(rng.uniform(24, 56) * s)
        spot = _free_spot(rng, w, h, size, round(6 * s), occupied)
        if spot is not None:
            local = np.zeros((h, w), np.uint8)
            _footprint(rng, sprite, local, spot[0], spot[1], size, with_body=True)
            x, y, bw, bh = cv2.boundingRect(local)
            occupied.append((x, y, x + bw, y + bh))
    # Passives: tinned ends and a near-black body. A tan body read as a copper scratch at the model's scale.
    for _ in range(int(rng.integers(2, 6))):
        lw, sw = max(6, round(12 * s)), max(3, round(6 * s))
        bw, bh = (lw, sw) if rng.random() < 0.5 else (sw, lw)
        spot = _free_spot(rng, w, h, lw, round(6 * s), occupied)
        if spot is None:
            continue
        x, y = spot[0] - bw // 2, spot[1] - bh // 2
        cv2.rectangle(sprite, (x, y), (x + bw - 1, y + bh - 1), (185, 185, 190), -1)
        end = 2 if bw > bh else 0
        cv2.rectangle(
            sprite, (x + end, y + 2 - end), (x + bw - 1 - end, y + bh - 3 + end), _color(rng, (34, 34, 38), 6), -1
        )
        occupied.append((x, y, x + bw, y + bh))


def _footprint(
    rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, with_body: bool
) -> None:
    """An IC footprint: silkscreen outline and two rows of tinned pads; a mounted chip covers the middle."""
    long_side, short_side = size, max(8, round(size * rng.uniform(0.45, 0.7)))
    horizontal = bool(rng.random() < 0.5)
    bw, bh = (long_side, short_side) if horizontal else (short_side, long_side)
    x1, y1 = cx - bw // 2, cy - bh // 2
    x2, y2 = x1 + bw - 1, y1 + bh - 1
    cv2.rectangle(local, (x1, y1), (x2, y2), 255, -1)
    cv2.rectangle(sprite, (x1, y1), (x2, y2), (225, 228, 230), 1)
    pads = max(3, long_side // 8)
    pitch = (long_side - 4) / pads
    pad_len = max(2, round(short_side * 0.22))
    for i in range(pads):
        a = round(2 + i * pitch + pitch * 0.2)
        b = round(2 + (i + 1) * pitch - pitch * 0.2)
        if horizontal:
            cv2.rectangle(sprite, (x1 + a, y1 + 2), (x1 + b, y1 + 1 + pad_len), (200, 202, 205), -1)
            cv2.rectangle(sprite, (x1 + a, y2 - 1 - pad_len), (x1 + b, y2 - 2), (200, 202, 205), -1)
        else:
            cv2.rectangle(sprite, (x1 + 2, y1 + a), (x1 + 1 + pad_len, y1 + b), (200, 202, 205), -1)
            cv2.rectangle(sprite, (x2 - 1 - pad_len, y1 + a), (x2 - 2, y1 + b), (200, 202, 205), -1)
    if with_body:
        inset = 2 + pad_len // 2
        body = (x1 + 2, y1 + inset, x2 - 2, y2 - inset) if horizontal else (x1 + inset, y1 + 2, x2 - inset, y2 - 2)
        cv2.rectangle(sprite, body[:2], body[2:], _color(rng, (28, 28, 30), 6), -1)
        cv2.circle(sprite, (body[0] + 4, body[1] + 4), 1, (150, 150, 150), -1)


def _scratch(rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, kind: str) -> None:
    angle = rng.uniform(0, np.pi)
    ux, uy = np.cos(angle), np.sin(angle)
    thick = max(2, round(size / 22))
    core = _color(rng, (235, 238, 240), 12) if kind == "plate" else _color(rng, (70, 150, 225), 12)  # copper
    edge = (70, 70, 72) if kind == "plate" else (20, 45, 20)
    lines = [(0.0, 1.0, thick)]
    for _ in range(int(rng.integers(0, 3))):
        lines.append((float(rng.uniform(3, 6)) * rng.choice([-1, 1]), float(rng.uniform(0.4, 0.8)), max(1, thick - 1)))
    for shift, frac, t in lines:
        half = size * frac / 2 - t
        p1 = (round(cx - ux * half - uy * shift), round(cy - uy * half + ux * shift))
        p2 = (round(cx + ux * half - uy * shift), round(cy + uy * half + ux * shift))
        cv2.line(sprite, p1, p2, edge, t + 2, cv2.LINE_AA)
        cv2.line(sprite, p1, p2, core, t, cv2.LINE_AA)
        cv2.line(local, p1, p2, 255, t + 2)


def _dent(rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, kind: str) -> None:
    rx = size / 2 - 1
    ry = rx * rng.uniform(0.65, 1.0)
    angle = rng.uniform(0, np.pi)
    cv2.ellipse(local, (cx, cy), (round(rx), round(ry)), np.degrees(angle), 0, 360, 255, -1)
    x, y, w, h = cv2.boundingRect(local)
    yy, xx = np.mgrid[y : y + h, x : x + w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
    depth = np.clip(1 - (u / rx) ** 2 - (v / ry) ** 2, 0, 1)
    # Light from the top left: the near wall falls into shadow, the far wall catches the light.
    slope = (dx + dy) / (1.414 * rx)
    delta = (-45 * np.sqrt(depth) + 70 * slope * (depth > 0)) * (depth > 0)
    roi = sprite[y : y + h, x : x + w]
    shaded = np.clip(roi.astype(np.float32) + delta[:, :, None], 0, 255).astype(np.uint8)
    roi[:] = cv2.GaussianBlur(shaded, (3, 3), 0)


def _stain(rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, kind: str) -> None:
    blob = np.zeros_like(local)
    for _ in range(int(rng.integers(3, 7))):
        ox, oy = rng.uniform(-size / 4, size / 4, 2)
        r = rng.uniform(size / 7, size / 4)
        cv2.ellipse(
            blob,
            (round(cx + ox), round(cy + oy)),
            (round(r), round(r * rng.uniform(0.6, 1.0))),
            float(rng.uniform(0, 180)),
            0,
            360,
            255,
            -1,
        )
    soft = cv2.GaussianBlur(blob, (7, 7), 0)
    local[soft > 40] = 255
    x, y, w, h = cv2.boundingRect(local)
    color = _color(rng, (30, 55, 85), 15) if kind == "plate" else _color(rng, (60, 170, 200), 15)
    alpha = (soft[y : y + h, x : x + w].astype(np.float32) / 255 * rng.uniform(0.65, 0.85))[:, :, None]
    roi = sprite[y : y + h, x : x + w]
    roi[:] = np.clip(roi * (1 - alpha) + np.array(color, np.float32) * alpha, 0, 255).astype(np.uint8)


def _missing(rng: np.random.Generator, sprite: Image, local: Mask, cx: int, cy: int, size: int, kind: str) -> None:
    _footprint(rng, sprite, local, cx, cy, size, with_body=False)


_DRAW_DEFECT: dict[int, Callable[[np.random.Generator, Image, Mask, int, int, int, str], None]] = {
    SCRATCH: _scratch,
    DENT: _dent,
    STAIN: _stain,
    MISSING_COMPONENT: _missing,
}

"""Façade textures: materials, floors, bays, windows, panels and roof ornaments.

Façades combine real photographs (:mod:`asymret.data.synth.photos`) with procedural structure
(floors, bays, window grids with a per-landmark window shape, cornices, pilasters, doors,
colour blocks, stripes, checkers, clocks). Landmarks share this vocabulary of materials and
styles, as real buildings do; each has its own proportions, layout and details.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from asymret.data.synth.geometry import _landmark_geometry, _LandmarkPlan, _Quad, _wall_extent
from asymret.data.synth.photos import (
    _COLOUR_PHOTOS,
    _GREY_PHOTOS,
    _ROUND_PHOTOS,
    _SIGN_PHOTOS,
    _WALL_MATERIALS,
    _jitter_colour,
    _low_frequency,
    _material,
    _photo_crop,
    _rgb255,
    _to_uint8,
    _triple,
)
from asymret.data.synth.streams import _STREAM_TEXTURE, _rng

# Texture resolution for 224-pixel images (scaled with the image size).
_TEXTURE_PX_PER_METRE = 12.0
_TEXTURE_MAX_SIDE = 320
_REFERENCE_IMAGE_SIZE = 224

_WALL_TINTS = (
    (0.82, 0.72, 0.55),  # sandstone
    (0.86, 0.84, 0.78),  # limestone
    (0.64, 0.34, 0.26),  # red brick
    (0.56, 0.57, 0.59),  # granite
    (0.80, 0.62, 0.34),  # ochre
    (0.93, 0.92, 0.89),  # stucco
    (0.62, 0.71, 0.80),  # pastel blue
    (0.86, 0.67, 0.66),  # pink
    (0.40, 0.37, 0.35),  # dark stone
    (0.55, 0.62, 0.50),  # green stucco
)
_ACCENT_COLOURS = (
    (0.80, 0.12, 0.10),
    (0.10, 0.25, 0.65),
    (0.95, 0.80, 0.15),
    (0.10, 0.45, 0.25),
    (0.95, 0.95, 0.93),
    (0.08, 0.08, 0.10),
    (0.55, 0.20, 0.55),
    (0.90, 0.50, 0.10),
)
_WINDOW_SHAPES = ("rect", "arch", "pointed", "round", "twin")
_PANEL_KINDS = (
    "mural",
    "rose",
    "mosaic",
    "relief",
    "sign",
    "blocks",
    "stripes",
    "checker",
    "clock",
    "logo",
    "emblem",
)


@dataclass(frozen=True)
class _Style:
    """Architectural vocabulary shared by all walls of one building."""

    material: str
    wall: tuple[float, float, float]
    trim: tuple[float, float, float]
    accent: tuple[float, float, float]
    glass: tuple[float, float, float]
    floor_height: float
    bay_width: float
    window_shape: str
    window_size: tuple[float, float]  # fraction of the bay width and of the floor height
    shutters: bool
    pilasters: bool
    cornices: bool
    mullions: bool
    arcade: bool


def _random_style(rng: np.random.Generator) -> _Style:
    """Materials, colours and rhythm of a building."""
    wall = _jitter_colour(rng, _WALL_TINTS[int(rng.integers(len(_WALL_TINTS)))], 0.05)
    trim = np.clip(wall * rng.choice([0.7, 1.2]) + rng.normal(0, 0.04, 3), 0.05, 0.97)
    return _Style(
        material=str(rng.choice(_WALL_MATERIALS)),
        wall=_triple(wall),
        trim=_triple(trim),
        accent=_triple(_jitter_colour(rng, _ACCENT_COLOURS[int(rng.integers(8))], 0.06)),
        glass=_triple(_jitter_colour(rng, (0.16, 0.2, 0.26), 0.05)),
        floor_height=float(rng.uniform(3.0, 5.0)),
        bay_width=float(rng.uniform(2.5, 5.0)),
        window_shape=str(rng.choice(_WINDOW_SHAPES)),
        window_size=(float(rng.uniform(0.35, 0.7)), float(rng.uniform(0.45, 0.75))),
        shutters=bool(rng.random() < 0.25),
        pilasters=bool(rng.random() < 0.4),
        cornices=bool(rng.random() < 0.6),
        mullions=bool(rng.random() < 0.5),
        arcade=bool(rng.random() < 0.3),
    )


def _window_outline(shape: str, box: Sequence[float]) -> list[list[tuple[float, float]]]:
    """Polygons of a window of the given shape inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    width = x1 - x0
    if shape == "twin":
        gap = width * 0.12
        half = (width - gap) / 2
        return _window_outline("arch", (x0, y0, x0 + half, y1)) + _window_outline(
            "arch", (x1 - half, y0, x1, y1)
        )
    if shape == "rect":
        return [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]
    if shape == "round":
        angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, width / 2, (y1 - y0) / 2
        return [[(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]]
    radius = width / 2
    spring = min(y1, y0 + radius)
    if shape == "pointed":
        return [
            [(x0, y1), (x0, spring), ((x0 + x1) / 2, y0 - radius * 0.3), (x1, spring), (x1, y1)]
        ]
    angles = np.linspace(np.pi, 2 * np.pi, 10)
    arch = [((x0 + x1) / 2 + radius * np.cos(a), spring + radius * np.sin(a)) for a in angles]
    return [[(x0, y1), *arch, (x1, y1)]]


def _panel(
    rng: np.random.Generator, kind: str, width: int, height: int, style: _Style
) -> tuple[np.ndarray, Image.Image]:
    """A decorative panel: RGB (height, width, 3) in [0, 1] and its mask."""
    mask = Image.new("L", (width, height), 255)
    trim = _rgb255(style.trim)
    if kind == "mural":
        picture = _photo_crop(rng, str(rng.choice(_COLOUR_PHOTOS)), width, height)
    elif kind == "rose":
        side = min(width, height)
        picture = _photo_crop(rng, str(rng.choice(_ROUND_PHOTOS)), width, height, 0.5)
        mask = Image.new("L", (width, height), 0)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        image = Image.fromarray(_to_uint8(picture))
        draw = ImageDraw.Draw(image)
        cx, cy, radius = width / 2, height / 2, side / 2
        for angle in np.linspace(0, 2 * np.pi, int(rng.integers(6, 13)), endpoint=False):
            draw.line(
                [(cx, cy), (cx + radius * np.cos(angle), cy + radius * np.sin(angle))],
                fill=trim,
                width=max(1, side // 24),
            )
        draw.ellipse(box, outline=trim, width=max(1, side // 14))
        picture = np.asarray(image, dtype=np.float32) / 255.0
    elif kind == "mosaic":
        tiles = int(rng.integers(5, 12))
        small = _photo_crop(
            rng, str(rng.choice(_COLOUR_PHOTOS)), tiles, max(2, tiles * height // width)
        )
        image = Image.fromarray(_to_uint8(small)).resize((width, height), Image.Resampling.NEAREST)
        picture = np.asarray(image, dtype=np.float32) / 255.0
    elif kind == "relief":
        grey = _photo_crop(rng, str(rng.choice(_GREY_PHOTOS)), width, height).mean(axis=2)
        embossed = Image.fromarray(_to_uint8(grey)).filter(ImageFilter.EMBOSS)
        shade = np.asarray(embossed, dtype=np.float32) / 255.0
        picture = np.clip(
            (0.55 + 0.9 * (shade - 0.5))[..., None] * np.asarray(style.wall) * 1.1, 0, 1
        )
    elif kind == "sign":
        text = _photo_crop(rng, str(rng.choice(("text", "page"))), width, height, 0.4).mean(axis=2)
        ink, paper = (
            (style.accent, (0.95, 0.93, 0.88))
            if rng.random() < 0.5
            else ((0.95, 0.93, 0.88), style.accent)
        )
        picture = text[..., None] * np.asarray(paper) + (1 - text[..., None]) * np.asarray(ink)
    elif kind == "blocks":
        picture = np.empty((height, width, 3), np.float32)
        picture[:] = style.accent
        for _ in range(int(rng.integers(3, 7))):
            bx0, bx1 = sorted(rng.integers(0, width + 1, 2))
            by0, by1 = sorted(rng.integers(0, height + 1, 2))
            picture[by0:by1, bx0:bx1] = _ACCENT_COLOURS[int(rng.integers(8))]
        image = Image.fromarray(_to_uint8(picture))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x = int(rng.integers(0, width))
            draw.line([(x, 0), (x, height)], fill=(20, 20, 20), width=max(1, width // 30))
        picture = np.asarray(image, dtype=np.float32) / 255.0
    elif kind == "stripes":
        period = rng.uniform(0.08, 0.3) * max(width, height)
        angle = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])
        ys, xs = np.mgrid[0:height, 0:width]
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period
        second = np.asarray(_ACCENT_COLOURS[int(rng.integers(8))], np.float32)
        picture = np.where(((phase % 1) < 0.5)[..., None], np.asarray(style.accent), second)
    elif kind == "checker":
        cells = int(rng.integers(3, 9))
        pattern = _photo_crop(rng, "checkerboard", width, height, 0.2).mean(axis=2)
        ys, xs = np.mgrid[0:height, 0:width]
        checker = ((xs * cells // width + ys * cells // max(1, width)) % 2).astype(np.float32)
        mix = 0.7 * checker + 0.3 * pattern
        picture = mix[..., None] * np.asarray(style.accent) + (1 - mix[..., None]) * 0.9
    elif kind == "clock":
        side = min(width, height)
        picture = np.empty((height, width, 3), np.float32)
        picture[:] = style.trim
        image = Image.fromarray(_to_uint8(picture))
        draw = ImageDraw.Draw(image)
        cx, cy, radius = width / 2, height / 2, side / 2 * 0.95
        draw.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius],
            fill=(238, 236, 225),
            outline=_rgb255(style.accent),
            width=max(1, side // 12),
        )
        for tick in range(12):
            angle = tick * np.pi / 6
            draw.line(
                [
                    (cx + 0.75 * radius * np.cos(angle), cy + 0.75 * radius * np.sin(angle)),
                    (cx + 0.9 * radius * np.cos(angle), cy + 0.9 * radius * np.sin(angle)),
                ],
                fill=(25, 25, 25),
                width=max(1, side // 30),
            )
        for length, angle in ((0.5, rng.uniform(0, 2 * np.pi)), (0.8, rng.uniform(0, 2 * np.pi))):
            draw.line(
                [
                    (cx, cy),
                    (cx + length * radius * np.cos(angle), cy + length * radius * np.sin(angle)),
                ],
                fill=(25, 25, 25),
                width=max(1, side // 20),
            )
        picture = np.asarray(image, dtype=np.float32) / 255.0
    elif kind == "logo":
        picture = _photo_crop(rng, str(rng.choice(_SIGN_PHOTOS)), width, height, 0.6)
        picture = picture * 0.8 + 0.2 * np.asarray(style.accent)
    else:  # emblem: a shield with a small picture
        picture = np.empty((height, width, 3), np.float32)
        picture[:] = style.accent
        picture[:, width // 2 :] = _ACCENT_COLOURS[int(rng.integers(8))]
        inner_w, inner_h = max(2, width // 2), max(2, height // 2)
        picture[height // 4 : height // 4 + inner_h, width // 4 : width // 4 + inner_w] = (
            _photo_crop(rng, str(rng.choice(_COLOUR_PHOTOS)), inner_w, inner_h)
        )
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).polygon(
            [(0, 0), (width, 0), (width, height * 0.6), (width / 2, height), (0, height * 0.6)],
            fill=255,
        )
    if kind in ("mural", "mosaic", "sign", "blocks", "logo"):
        image = Image.fromarray(_to_uint8(picture))
        ImageDraw.Draw(image).rectangle(
            [0, 0, width - 1, height - 1], outline=trim, width=max(1, min(width, height) // 12)
        )
        picture = np.asarray(image, dtype=np.float32) / 255.0
    return picture.astype(np.float32), mask


def _facade_texture(
    rng: np.random.Generator,
    style: _Style,
    quad: _Quad,
    px_per_metre: float,
    ornament: str,
    role: str,
) -> Image.Image:
    """RGBA texture of one wall: material, floors, bays, windows, panels, roof ornament.

    Args:
        ornament: Shape above the roof line: "gable", "stepped", "arch", "crenel", "spire".
        role: "front", "side", "back" or "tower".
    """
    wall_m, height_m = _wall_extent(quad)
    width = max(8, round(quad.size[0] * px_per_metre))
    roof_px = round(quad.wall_top * px_per_metre)
    wall_px = max(8, round(height_m * px_per_metre))
    total = roof_px + wall_px
    ppm = width / quad.size[0]

    surface = _material(rng, style.material, style.wall, width, total)
    surface *= (0.88 + 0.2 * _low_frequency(rng, width, total, 4))[..., None]
    grime = np.linspace(0.0, 1.0, total, dtype=np.float32) ** 3
    surface *= (1.0 - 0.18 * grime)[:, None, None]
    image = Image.fromarray(_to_uint8(surface))
    draw = ImageDraw.Draw(image)
    trim, accent = _rgb255(style.trim), _rgb255(style.accent)

    floors = max(1, round(height_m / style.floor_height))
    floor_px = wall_px / floors
    bays = max(1, round(wall_m / style.bay_width))
    bay_px = width / bays
    top = roof_px

    draw.rectangle([0, total - max(2, 0.9 * ppm), width, total], fill=trim)
    draw.rectangle([0, top, width, top + max(1, 0.45 * ppm)], fill=trim)
    if style.cornices:
        for floor in range(1, floors):
            y = top + floor * floor_px
            draw.rectangle([0, y - max(1, 0.15 * ppm), width, y + max(1, 0.15 * ppm)], fill=trim)
    if style.pilasters:
        for bay in range(bays + 1):
            x = bay * bay_px
            draw.rectangle([x - 0.25 * ppm, top, x + 0.25 * ppm, total], fill=trim)

    occupied = np.zeros((floors, bays), dtype=bool)
    panels = {"front": (1, 4), "side": (0, 2), "back": (0, 2), "tower": (0, 1)}
    for _ in range(int(rng.integers(*panels[role]))):
        span_f = int(rng.integers(1, min(3, floors) + 1))
        span_b = int(rng.integers(1, min(4, bays) + 1))
        floor0 = int(rng.integers(0, floors - span_f + 1))
        bay0 = int(rng.integers(0, bays - span_b + 1))
        if occupied[floor0 : floor0 + span_f, bay0 : bay0 + span_b].any():
            continue
        occupied[floor0 : floor0 + span_f, bay0 : bay0 + span_b] = True
        x0 = int(bay0 * bay_px + 0.12 * bay_px)
        x1 = int((bay0 + span_b) * bay_px - 0.12 * bay_px)
        y0 = int(top + floor0 * floor_px + 0.12 * floor_px)
        y1 = int(top + (floor0 + span_f) * floor_px - 0.12 * floor_px)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        kind = str(rng.choice(_PANEL_KINDS)) if role != "tower" else "clock"
        picture, mask = _panel(rng, kind, x1 - x0, y1 - y0, style)
        image.paste(Image.fromarray(_to_uint8(picture)), (x0, y0), mask)

    glass_mask = Image.new("L", (width, total), 0)
    glass_draw = ImageDraw.Draw(glass_mask)
    frames = []
    door_bay = bays // 2 if role == "front" else -1
    for floor in range(floors):
        for bay in range(bays):
            if occupied[floor, bay]:
                continue
            y_floor = top + floor * floor_px
            x_bay = bay * bay_px
            if floor == floors - 1 and bay == door_bay:
                door_w = bay_px * 0.6
                box = (
                    x_bay + (bay_px - door_w) / 2,
                    y_floor + floor_px * 0.15,
                    x_bay + (bay_px + door_w) / 2,
                    total - 0.9 * ppm,
                )
                for polygon in _window_outline("arch", box):
                    draw.polygon(polygon, fill=_rgb255(np.asarray(style.accent) * 0.45))
                    frames.append(polygon)
                continue
            shape = "arch" if style.arcade and floor == floors - 1 else style.window_shape
            win_w = bay_px * style.window_size[0]
            win_h = floor_px * style.window_size[1]
            box = (
                x_bay + (bay_px - win_w) / 2,
                y_floor + (floor_px - win_h) * 0.55,
                x_bay + (bay_px + win_w) / 2,
                y_floor + (floor_px + win_h) * 0.55,
            )
            if style.shutters and shape == "rect":
                draw.rectangle([box[0] - win_w * 0.35, box[1], box[0], box[3]], fill=accent)
                draw.rectangle([box[2], box[1], box[2] + win_w * 0.35, box[3]], fill=accent)
            for polygon in _window_outline(shape, box):
                glass_draw.polygon(polygon, fill=255)
                frames.append(polygon)
            if style.mullions:
                frames.append([((box[0] + box[2]) / 2, box[1]), ((box[0] + box[2]) / 2, box[3])])

    gradient = np.linspace(1.3, 0.7, total, dtype=np.float32)[:, None, None]
    reflection = _photo_crop(
        rng, str(rng.choice(_COLOUR_PHOTOS)), max(1, width // 4), max(1, total // 4), 0.6
    )
    reflection = Image.fromarray(_to_uint8(reflection)).resize((width, total))
    glass = np.asarray(style.glass, np.float32) * gradient * 0.8 + 0.22 / 255.0 * np.asarray(
        reflection, np.float32
    )
    image.paste(Image.fromarray(_to_uint8(glass)), (0, 0), glass_mask)
    frame_width = max(1, round(0.2 * ppm))
    for polygon in frames:
        draw.line(
            [*polygon, polygon[0]] if len(polygon) > 2 else polygon, fill=trim, width=frame_width
        )

    alpha = Image.new("L", (width, total), 0)
    alpha_draw = ImageDraw.Draw(alpha)
    alpha_draw.rectangle([0, roof_px, width, total], fill=255)
    if roof_px > 0:
        _draw_ornament(alpha_draw, image, ornament, roof_px, ppm, style, rng)
    image.putalpha(alpha)
    return image


def _plain_facade(
    rng: np.random.Generator, style: _Style, quad: _Quad, px_per_metre: float
) -> Image.Image:
    """Cheap RGBA texture of a neighbouring building: material, window grid, trim bands."""
    width = max(4, round(quad.size[0] * px_per_metre))
    height = max(4, round(quad.size[1] * px_per_metre))
    surface = _material(rng, style.material, style.wall, width, height)
    floors = max(1, round(quad.size[1] / style.floor_height))
    bays = max(1, round(quad.size[0] / style.bay_width))
    rows = (np.arange(height) + 0.5) / height * floors % 1.0
    cols = (np.arange(width) + 0.5) / width * bays % 1.0
    low = (1 - style.window_size[1]) / 2
    in_rows = (rows > low) & (rows < 1 - low * 0.6)
    in_rows[int(height * (floors - 1) / floors) :] &= rng.random() < 0.5  # shop windows or not
    in_cols = np.abs(cols - 0.5) < style.window_size[0] / 2
    surface[in_rows[:, None] & in_cols[None, :]] = style.glass
    band = max(1, round(0.5 * px_per_metre))
    surface[:band] = style.trim
    surface[-band:] = np.asarray(style.trim) * 0.7
    alpha = np.full((height, width, 1), 255, np.uint8)
    return Image.fromarray(np.concatenate([_to_uint8(surface), alpha], axis=2))


def _draw_ornament(
    alpha: ImageDraw.ImageDraw,
    image: Image.Image,
    ornament: str,
    roof_px: int,
    ppm: float,
    style: _Style,
    rng: np.random.Generator,
) -> None:
    """Shape above the roof line (into the alpha mask) and its trim and decoration."""
    width = image.width
    draw = ImageDraw.Draw(image)
    trim = _rgb255(style.trim)
    if ornament == "crenel":
        merlon = max(2, int(1.2 * ppm))
        for x in range(0, width, 2 * merlon):
            alpha.rectangle([x, 0, x + merlon - 1, roof_px], fill=255)
        return
    if ornament in ("gable", "spire"):
        outline = [(0, roof_px), (width / 2, 0), (width, roof_px)]
    elif ornament == "stepped":
        steps = int(rng.integers(3, 6))
        outline = [(0, roof_px)]
        for step in range(steps):
            x_in = width / 2 * step / steps
            y = roof_px * (1 - (step + 1) / steps)
            outline += [(x_in, roof_px * (1 - step / steps)), (x_in, y)]
        outline += [(width - x, y) for x, y in reversed(outline[1:])] + [(width, roof_px)]
    else:  # arch
        angles = np.linspace(np.pi, 2 * np.pi, 16)
        outline = [
            (width / 2 + width * 0.4 * np.cos(a), roof_px + roof_px * np.sin(a)) for a in angles
        ]
    alpha.polygon(outline, fill=255)
    draw.line(outline, fill=trim, width=max(1, int(0.4 * ppm)))
    if ornament != "spire" and roof_px > 6 and rng.random() < 0.7:
        radius = roof_px * 0.28
        cx, cy = width / 2, roof_px * 0.62
        picture = _photo_crop(rng, str(rng.choice(_ROUND_PHOTOS)), int(2 * radius), int(2 * radius))
        disc = Image.new("L", picture.shape[1::-1], 0)
        ImageDraw.Draw(disc).ellipse([0, 0, disc.width - 1, disc.height - 1], fill=255)
        image.paste(Image.fromarray(_to_uint8(picture)), (int(cx - radius), int(cy - radius)), disc)
        draw.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius],
            outline=trim,
            width=max(1, int(0.3 * ppm)),
        )


def _mip_pyramid(texture: Image.Image) -> tuple[Image.Image, ...]:
    """The texture and its halvings, for sampling without aliasing at any distance."""
    levels = [texture]
    while min(levels[-1].size) >= 16:
        levels.append(levels[-1].reduce(2))
    return tuple(levels)


@functools.lru_cache(maxsize=6)
def _landmark_textures(
    seed: int, plan: _LandmarkPlan, image_size: int
) -> tuple[tuple[Image.Image, ...], ...]:
    """Mip pyramids of the textures of a landmark's quads (in the order of its geometry)."""
    rng = _rng(seed, _STREAM_TEXTURE, plan.landmark_id)
    style = _random_style(rng)
    tower_style = replace(
        _random_style(rng), material=style.material, wall=style.wall, trim=style.trim
    )
    geometry = _landmark_geometry(plan)
    largest = max(max(q.size) for q in geometry.quads)
    ppm = min(_TEXTURE_PX_PER_METRE, _TEXTURE_MAX_SIDE / largest)
    ppm *= image_size / _REFERENCE_IMAGE_SIZE
    pyramids = []
    for index, quad in enumerate(geometry.quads):
        if index >= 4:
            texture = _facade_texture(rng, tower_style, quad, ppm, "spire", "tower")
        else:
            role = ("front", "side", "back", "side")[index]
            texture = _facade_texture(rng, style, quad, ppm, plan.roof, role)
        pyramids.append(_mip_pyramid(texture))
    return tuple(pyramids)

"""Plots and image strips drawn with Pillow alone (matplotlib is not a dependency).

:func:`line_plot` draws a small line chart; :func:`accuracy_vs_m` and :func:`path_integration_plot` turn
evaluate() results into the two figures of the report; :func:`to_pil`, :func:`grid` and :func:`bar_row` build the
image strips TensorBoard shows (imagination rollouts, [AGG] attention).

>>> img = line_plot({"z_agg": ([1, 2, 3], [50.0, 60.0, 64.0])}, title="top-1 vs M", xlabel="M", ylabel="%")
>>> img.size
(640, 420)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (188, 189, 34), (23, 190, 207)]
GREYS = [(150, 150, 150), (95, 95, 95), (195, 195, 195)]  # the random-init lines: a yardstick, not a result
Series = dict[str, tuple[Sequence[float], Sequence[float]]]


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


def line_plot(series: Series, *, title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (640, 420),
              dashed: Sequence[str] = (), grey: Sequence[str] = (), caption: str = "") -> Image.Image:
    """Lines with markers for each ``label -> (xs, ys)``; labels in ``dashed`` are drawn dashed, those in ``grey``
    in shades of grey (random init). NaNs are gaps. ``caption`` is wrapped below the plot, which grows to hold it."""
    W, H = size
    left, right, top, bottom = 60, 170, 30, 45
    title, xlabel, ylabel = _ascii(title), _ascii(xlabel), _ascii(ylabel)
    font = _font()
    caption_lines = _wrap(_ascii(caption), W - 16) if caption else []
    img = Image.new("RGB", (W, H + 16 * len(caption_lines) + (10 if caption_lines else 0)), "white")
    d = ImageDraw.Draw(img)
    for i, line in enumerate(caption_lines):
        d.text((8, H + 3 + 16 * i), line, fill="black", font=font)
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    if not pts:
        d.text((W // 2 - 40, H // 2), "no data", fill="black", font=font)
        return img
    xs_all = sorted({p[0] for p in pts})
    integral = all(float(x).is_integer() for x in xs_all) and xs_all[-1] - xs_all[0] <= 12
    xt = (list(range(int(xs_all[0]), int(xs_all[-1]) + 1)) if integral and len(xs_all) > 1
          else _ticks(xs_all[0], xs_all[-1]))
    yt = _ticks(min(p[1] for p in pts), max(p[1] for p in pts))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    px = lambda x: left + (x - x0) / (x1 - x0) * (W - left - right)  # noqa: E731
    py = lambda y: H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom)  # noqa: E731
    for t in xt:
        d.line([px(t), H - bottom, px(t), H - bottom + 4], fill="black")
        d.text((px(t) - 8, H - bottom + 6), f"{t:g}", fill="black", font=font)
    for t in yt:
        d.line([left - 4, py(t), W - right, py(t)], fill=(225, 225, 225))
        d.text((4, py(t) - 7), f"{t:.3g}", fill="black", font=font)
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    d.text((left + 40, 8), title, fill="black", font=font)
    d.text(((W - right + left) // 2 - 20, H - 18), xlabel, fill="black", font=font)
    d.text((4, 8), ylabel, fill="black", font=font)
    greys = iter(GREYS * len(series))
    colours = iter(PALETTE * len(series))
    for i, (label, (xs, ys)) in enumerate(series.items()):
        colour = next(greys) if label in grey else next(colours)
        xy = [(px(x), py(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
        for a, b in zip(xy, xy[1:]):
            _segment(d, a, b, colour, dashed=label in dashed)
        for x, y in xy:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = top + 6 + 16 * i
        _segment(d, (W - right + 10, ly + 6), (W - right + 30, ly + 6), colour, dashed=label in dashed)
        d.text((W - right + 34, ly), _ascii(label)[:24], fill="black", font=font)
    return img


def _wrap(text: str, width_px: int, char_px: int = 6) -> list[str]:
    """``text`` broken at spaces into lines of about ``width_px`` pixels of the default font."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width_px // char_px:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


def _ascii(text: str) -> str:
    """Pillow's built-in font has no superscripts: R² -> R^2."""
    return text.replace("²", "^2")


def _segment(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], colour, dashed: bool) -> None:
    if not dashed:
        d.line([a, b], fill=colour, width=2)
        return
    n = max(1, int(math.dist(a, b) // 6))
    for k in range(0, n, 2):  # every other 6-px piece
        t0, t1 = k / n, min(1.0, (k + 1) / n)
        d.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)], fill=colour, width=2)


def _by_m(metrics: dict, pattern: str) -> tuple[list[int], list[float]]:
    """(M values, values) of the metrics whose name matches ``pattern`` with one ``(\\d+)`` group for M."""
    found = sorted((int(m.group(1)), e["value"]) for k, e in metrics.items() if (m := re.fullmatch(pattern, k)))
    return [m for m, _ in found], [v for _, v in found]


def accuracy_vs_m(results_by_model: dict[str, dict]) -> Image.Image | None:
    """Top-1 on z_agg against M_val, one line per model and probe (linear probe solid, k-NN dashed); models named
    "random init" in grey. The title names only the probes that ran."""
    series, dashed, grey = {}, [], []
    for name, res in results_by_model.items():
        metrics = res.get("metrics", res)
        for probe, pattern in (("linear", r"linear_probe/z_agg/M=(\d+)"), ("k-NN", r"knn/z_agg/M=(\d+)")):
            xs, ys = _by_m(metrics, pattern)
            if xs:
                label = f"{name} {probe}"
                series[label] = (xs, ys)
                if probe == "k-NN":
                    dashed.append(label)
                if name == "random init":
                    grey.append(label)
    if not series:
        return None
    probes = {label.rsplit(" ", 1)[1] for label in series}
    how = ("solid: linear probe, dashed: k-NN" if probes == {"linear", "k-NN"}
           else "linear probe" if probes == {"linear"} else "k-NN")
    caption = "Grey: the same network at its random initialisation (what training added is the gap)." if grey else ""
    chance = _chance(results_by_model)
    if chance is not None:
        ms = sorted({m for xs, _ in series.values() for m in xs})
        series["chance"] = (ms, [chance] * len(ms))
        dashed.append("chance")
        grey.append("chance")
        caption += f" Chance (a uniform guess): {chance:.1f}%."
    return line_plot(series, title=f"top-1 on z_agg vs M_val ({how})", xlabel="M_val", ylabel="top-1 %",
                     dashed=dashed, grey=grey, caption=caption.strip())


def _chance(results_by_model: dict[str, dict]) -> float | None:
    """The chance level the top-1 metrics' protocols state (one value for one world), or None."""
    chances = {e["protocol"]["chance"] for res in results_by_model.values() for e in res.get("metrics", res).values()
               if e.get("protocol", {}).get("unit") == "top-1 %" and "chance" in e.get("protocol", {})}
    return chances.pop() if len(chances) == 1 else None


PATH_CAPTION = ("Solid: full (views and actions); dashed: ablated at inference. no_vision can score above full: with "
                "the views zeroed, z_agg carries only the actions, which is all the head needs to compose x_1 -> "
                "x_{M+1}; the views add features that carry little of the move and that a head fitted on a finite "
                "probe set must learn to ignore. views_only (no action anywhere) is what vision alone has learnt.")


def path_integration_plot(results: dict) -> Image.Image | None:
    """R² of path integration against M for every factor and condition of the trained model (all but ``full``
    dashed), with the random init's ``full`` in grey. ``results``: one model's evaluate() results, or
    ``{"trained": ..., "random init": ...}``."""
    by_model = results if "trained" in results else {"trained": results}
    trained = by_model["trained"].get("metrics", by_model["trained"])
    keys = sorted({k.rsplit("/M=", 1)[0] for k in trained if k.startswith("path_integration/")})
    series = {k.removeprefix("path_integration/"): _by_m(trained, re.escape(k) + r"/M=(\d+)") for k in keys}
    if not series:
        return None
    dashed = [k for k in series if not k.endswith("/full")]
    grey = []
    baseline = by_model.get("random init", {}).get("metrics", by_model.get("random init", {}))
    full = [k for k in keys if k.endswith("/full")]
    for k in full:
        xs, ys = _by_m(baseline, re.escape(k) + r"/M=(\d+)")
        if xs:
            factor = k.removeprefix("path_integration/").removesuffix("/full")
            label = "random init" + (f" {factor}" if len(full) > 1 else "")
            series[label] = (xs, ys)
            grey.append(label)
    caption = PATH_CAPTION + (" Grey: full at random initialisation." if grey else "")
    return line_plot(series, title="path integration: R² of x_1 -> x_{M+1} (views_only: no action given)", xlabel="M",
                     ylabel="R²", dashed=dashed, grey=grey, caption=caption)


# -- image strips ------------------------------------------------------------------------------------------------------


def to_pil(view: Tensor, size: int = 48) -> Image.Image:
    """A uint8 [3, H, W] view as a ``size``-pixel RGB image."""
    x = view.detach().cpu()
    if x.shape[-1] != size:
        x = F.interpolate(x[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
        x = x.round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).contiguous().numpy())


def grid(cells: list[list[Image.Image | None]], *, size: int = 48, pad: int = 3,
         borders: list[list[tuple | None]] | None = None, labels: list[str] | None = None) -> Image.Image:
    """Rows of equally sized images (None = empty cell), each with an optional coloured border and row label."""
    rows, cols = len(cells), max(len(r) for r in cells)
    label_w = 90 if labels else 0
    img = Image.new("RGB", (label_w + cols * (size + 2 * pad), rows * (size + 2 * pad)), "white")
    d = ImageDraw.Draw(img)
    font = _font(11)
    for r, row in enumerate(cells):
        y = r * (size + 2 * pad)
        if labels:
            d.text((4, y + size // 2 - 6), labels[r][:14], fill="black", font=font)
        for c, cell in enumerate(row):
            x = label_w + c * (size + 2 * pad)
            colour = borders[r][c] if borders and c < len(borders[r]) else None
            if colour is not None:
                d.rectangle([x, y, x + size + 2 * pad - 1, y + size + 2 * pad - 1], fill=colour)
            if cell is not None:
                img.paste(cell.resize((size, size)), (x + pad, y + pad))
    return img


def bar_row(views: Sequence[Image.Image], weights: Sequence[float], *, size: int = 48, bar: int = 40
            ) -> Image.Image:
    """Thumbnails side by side, each above a bar whose height is its weight (0–1), with the value printed."""
    w = size + 8
    img = Image.new("RGB", (w * len(views), size + bar + 18), "white")
    d = ImageDraw.Draw(img)
    font = _font(11)
    for i, (view, wt) in enumerate(zip(views, weights)):
        x = i * w + 4
        img.paste(view.resize((size, size)), (x, 2))
        h = int(round(max(0.0, min(1.0, wt)) * bar))
        d.rectangle([x, size + 4, x + size - 1, size + 4 + bar], fill=(235, 235, 235))  # the 0-1 scale
        d.rectangle([x, size + 4 + bar - h, x + size - 1, size + 4 + bar], fill=(214, 39, 40))
        d.text((x + 4, size + bar + 5), f"{wt:.2f}", fill="black", font=font)
    return img


def stack(images: Sequence[Image.Image], pad: int = 4) -> Image.Image:
    """Images one below the other, left-aligned."""
    W, H = max(i.width for i in images), sum(i.height for i in images) + pad * (len(images) - 1)
    out, y = Image.new("RGB", (W, H), "white"), 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + pad
    return out

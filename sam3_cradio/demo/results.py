"""Results in the page: the raw result kept in a session, filtered and drawn on demand; status messages.

A request keeps every detection above :data:`SCORE_FLOOR` (masks bit-packed) in the session, so the confidence
slider only filters and re-draws: no model call.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .inputs import UserError, hide_paths
from .models import WeightsError

__all__ = ['SCORE_FLOOR', 'RAW_TOPK', 'TABLE_HEADERS', 'Panel', 'RawResult', 'View', 'render_panel', 'render', 'draw_points',
           'message', 'PageError', 'page_error']

_logger = logging.getLogger(__name__)

SCORE_FLOOR = 0.05   # the raw result keeps detections above this; the slider filters from there
RAW_TOPK = 100       # and at most this many per backbone
TABLE_HEADERS = ['model', 'label', 'score', 'x0', 'y0', 'x1', 'y1', 'mask px']


@dataclass
class Panel:
    """One backbone's raw result (detections above SCORE_FLOOR), masks bit-packed."""
    title: str
    short_title: str
    packed: np.ndarray        # (N, H, ceil(W / 8)) uint8
    width: int
    boxes: np.ndarray         # (N, 4) float32, working pixels
    scores: np.ndarray        # (N,)
    labels: list[str]
    timings: dict[str, float]
    encoder_cached: bool

    @classmethod
    def from_result(cls, title: str, short_title: str, r: Any, encoder_cached: bool) -> Panel:
        """From a :class:`~sam3_cradio.predictor.Sam3Result`: its best :data:`RAW_TOPK` detections above the floor."""
        order = np.argsort(-r.scores, kind='stable')[:RAW_TOPK]
        order = order[r.scores[order] >= SCORE_FLOOR] if len(order) else order
        masks = r.masks[order]
        return cls(title, short_title, np.packbits(masks, axis=-1), masks.shape[-1], r.boxes[order], r.scores[order],
                   [r.labels[i] for i in order], dict(r.timings), encoder_cached)

    def filtered(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """(masks, boxes, scores, labels) of the detections scoring at least ``threshold``."""
        keep = np.nonzero(self.scores >= threshold)[0]
        masks = np.unpackbits(self.packed[keep], axis=-1, count=self.width).astype(bool)
        return masks, self.boxes[keep], self.scores[keep], [self.labels[i] for i in keep]


@dataclass
class RawResult:
    image: np.ndarray
    panels: list[Panel]
    notes: list[str]                                         # shown after the timings
    messages: list[str] = field(default_factory=list)        # markdown, e.g. a comparison that could not load


@dataclass
class View:
    """What the page shows of a result at a threshold."""
    image: np.ndarray
    second: np.ndarray | None    # the comparison backbone's, if any
    status: str                  # markdown
    table: dict                  # {'headers', 'data'} for a gradio Dataframe


def render_panel(image: np.ndarray, panel: Panel, threshold: float) -> tuple[np.ndarray, str, list[list]]:
    """(drawn image, status line, table rows) of one backbone's detections at ``threshold``."""
    from sam3_cradio.draw import annotate

    masks, boxes, scores, labels = panel.filtered(threshold)
    drawn = annotate(image, masks, boxes, scores, [f'{lab} {s:.2f}' for lab, s in zip(labels, scores)])
    enc = panel.timings.get('encoder', 0.0)
    enc_txt = f'encoder {enc:.2f} s (cached: not re-run)' if panel.encoder_cached else f'encoder {enc:.2f} s'
    line = (f'**{panel.title}**: {enc_txt} · decoder {panel.timings.get("decoder", 0.0):.2f} s · '
            f'**{len(scores)}** shown at ≥ {threshold:.2f} ({len(panel.scores)} at ≥ {SCORE_FLOOR:.2f})')
    rows = [[panel.short_title, lab, round(float(s), 3), *[round(float(v), 1) for v in b], int(m.sum())]
            for lab, s, b, m in zip(labels, scores, boxes, masks)]
    return drawn, line, rows


def render(raw: RawResult, threshold: float) -> View:
    """Every panel of ``raw`` at ``threshold``: images, one status line each (then notes and messages), table."""
    images, lines, rows = [], [], []
    for p in raw.panels:
        img, line, r = render_panel(raw.image, p, threshold)
        images.append(img)
        lines.append(line)
        rows += r
    notes = ''.join(f'\n\nℹ {n}' for n in raw.notes) + ''.join(f'\n\n{m}' for m in raw.messages)
    return View(images[0], images[1] if len(images) > 1 else None, '\n\n'.join(lines) + notes,
                {'headers': TABLE_HEADERS, 'data': rows})


def draw_points(image: np.ndarray, points: Sequence[Sequence[float]], labels: Sequence[int],
                scale: float) -> np.ndarray:
    """Clicks (original pixels; ``scale``: working pixels per original pixel) as green (1) / red (0) dots."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    r = max(4, round(max(out.shape[:2]) / 120))
    for (x, y), lab in zip(points, labels):
        c = (int(round(x * scale)), int(round(y * scale)))
        color = (34, 197, 94) if lab else (239, 68, 68)
        cv2.circle(out, c, r + 2, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, c, r, color, -1, cv2.LINE_AA)
    return out


def message(text: str, kind: str = 'warning') -> str:
    """Status markdown: an icon and the first line; further lines (e.g. commands to run) in a code block."""
    icon = {'warning': '⚠', 'error': '✖', 'info': 'ℹ', 'ok': '✔'}[kind]
    head, _, rest = str(text).partition('\n')
    body = f'\n\n```\n{rest.strip()}\n```' if rest.strip() else ''
    return f'{icon} {head}{body}'


@dataclass
class PageError:
    """A failed request as the page shows it."""
    kind: str       # 'warning' (the user's input) or 'error' (missing weights, a bug, out of memory)
    status: str     # markdown for the status box
    toast: str      # one line for a pop-up

    @classmethod
    def of(cls, kind: str, status: str) -> PageError:
        head = status.split('\n', 1)[0].replace('*', '').strip('✖⚠ℹ✔ ')
        return cls(kind, status, head[:300])


def page_error(e: Exception, what: str, private: Iterable[str | os.PathLike] = ()) -> PageError:
    """How the page reports ``e`` from a request: user errors and missing weights as they are, anything else (a bug,
    an environment problem such as out of memory) as ``what: Type: message``, the trace in the log. Paths under
    ``private`` (the server's upload and work folders) are cut to their file names."""
    if isinstance(e, UserError):
        kind, status = 'warning', message(str(e))
    elif isinstance(e, WeightsError):
        kind, status = 'error', str(e)
    else:
        _logger.error('%s', what, exc_info=e)
        kind, status = 'error', message(f'{what}: {type(e).__name__}: {e}', 'error')
    return PageError.of(kind, hide_paths(status, private))

"""What every request of the demo shares (models, encoded images, counters, a work folder) and the two requests
that run models: segment an image, track a video. Values come from the page as the UI sends them; errors are
:class:`~sam3_cradio.demo.inputs.UserError` (the user's input) or :class:`~sam3_cradio.demo.models.WeightsError`
(a model that cannot be built), both shown in the page as they are.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import DemoOptions

from sam3_cradio.registry import ModelSpec

from .inputs import NONE, ImagePrompt, LoadedImage, UserError, make_image_prompt, page_spec, parse_box, parse_texts
from .models import Build, FeatureCache, ModelCache, ModelEntry, ModelKey, Sam3Builder, WeightsError, weights_message
from .results import SCORE_FLOOR, Panel, RawResult
from .videos import read_video, to_browser_video

__all__ = ['Progress', 'DemoState', 'run_prompt', 'text_notes']

_logger = logging.getLogger(__name__)

# gradio.Progress's call signature: progress(fraction, desc=...)
Progress = Callable[..., Any]


def _no_progress(*args: Any, **kwargs: Any) -> None:
    pass


def text_notes(texts: Sequence[str]) -> list[str]:
    """A note per phrase longer than SAM3's text encoder reads (the library's warning, as the page shows it)."""
    from sam3_cradio.predictor import text_overflow

    return [o.message() + '.' for o in (text_overflow(t) for t in texts) if o is not None]


def run_prompt(predictor: Any, prompt: ImagePrompt) -> Any:
    """Run a checked prompt on a predictor holding the image: clicks (one object), exemplar boxes (with each
    text, if any) or text alone. Returns a :class:`~sam3_cradio.predictor.Sam3Result`."""
    from sam3_cradio.predictor import Sam3Result

    h, w = predictor.original_size
    if prompt.points:
        box = next((b for b, pos in zip(prompt.boxes, prompt.box_labels) if pos), None)
        multimask = len(prompt.points) == 1 and box is None  # one click is ambiguous: best of 3 candidates
        r = predictor.predict_points(prompt.points, prompt.point_labels, box=box, multimask_output=multimask)
        return Sam3Result(r.masks[:1], r.boxes[:1], r.scores[:1], ['object'] * min(1, len(r)), r.timings)
    if prompt.boxes:
        results = [predictor.predict_boxes(prompt.boxes, prompt.box_labels, text=t) for t in (prompt.texts or [None])]
        return Sam3Result.merge(results, h, w)
    return predictor.predict_text(prompt.texts)


class DemoState:
    """Everything shared between requests (thread-safe): models, encoded images, counters, a work folder.

    Args:
        args: :class:`~sam3_cradio.demo.options.DemoOptions`.
        build: ``build(spec, mode) -> model`` (default: :class:`~sam3_cradio.demo.models.Sam3Builder`).
    """

    def __init__(self, args: DemoOptions, build: Build | None = None) -> None:
        self.args = args
        self.backbones: list[str] = list(args.backbones)
        self.features = FeatureCache(args.feature_cache)
        self.models = ModelCache(build or Sam3Builder(args), args.max_models, on_evict=self.features.drop_model)
        self.default_key: ModelKey = (args.spec, 'image')
        self.encoder_runs = 0
        self._count_lock = threading.Lock()
        self.workdir = Path(tempfile.mkdtemp(prefix='sam3_cradio_demo_'))
        # folders whose paths never reach the page (the UI adds its upload folder)
        self.private_dirs: list[Path] = [self.workdir]

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- start-up ----

    def preload(self) -> threading.Thread:
        """Build the default model in the background (its state shows in :meth:`startup_status`)."""
        def run() -> None:
            try:
                self.models.get(*self.default_key)
            except Exception as e:  # shown in the page by startup_status
                _logger.warning('could not build the default model: %s', e)
        t = threading.Thread(target=run, name='sam3-demo-preload', daemon=True)
        t.start()
        return t

    def startup_status(self) -> tuple[str, bool]:
        """(markdown, final): the default model's state; final once it is ready or failed."""
        title = self.default_key[0].title()
        e = self.models.peek(self.default_key)
        tiny = ('\n\n⚠ **--tiny**: random SAM3 weights on a tiny C-RADIO. Detections and scores are meaningless; '
                'this mode is for trying the interface.') if self.args.tiny else ''
        if e is None or (e.model is None and e.error is None):
            if not self.args.preload and e is None:
                return f'ℹ {title} is built on the first request.{tiny}', True
            return f'… Loading {title} (the first request waits for it).{tiny}', False
        if e.model is not None:
            dev = next(e.model.parameters()).device
            return f'✔ {title} ready on {dev} (built in {e.seconds:.1f} s).{tiny}', True
        return weights_message(title, e.error or 'unknown error'), True

    # ---- models ----

    def model_entry(self, spec: ModelSpec, mode: str, progress: Progress = _no_progress) -> ModelEntry:
        """The built model of ``spec`` (building it now if needed); WeightsError says what is missing."""
        e = self.models.peek((spec, mode))
        if e is None or e.model is None:
            progress(0.05, desc=f'building {spec.title()} ({mode}): weights load once')
        try:
            return self.models.get(spec, mode)
        except (FileNotFoundError, ValueError) as err:
            raise WeightsError(weights_message(spec.title(), str(err))) from None

    def run_image(self, entry: ModelEntry, loaded: LoadedImage, prompt: ImagePrompt) -> tuple[Any, bool]:
        """(Sam3Result, encoder_cached) for one model; the encoded image comes from the cache when it can."""
        from sam3_cradio.predictor import Sam3ImagePredictor

        key = (entry.key, loaded.key)
        with entry.run_lock:
            model = entry.model or self.models.get(*entry.key).model  # rebuilt if evicted meanwhile
            predictor = Sam3ImagePredictor(model, confidence_threshold=SCORE_FLOOR)
            cached = self.features.get(key)
            if cached is not None:
                predictor.set_features(cached)
            else:
                predictor.set_image(loaded.image)
                with self._count_lock:
                    self.encoder_runs += 1
                self.features.put(key, predictor.features())
            try:
                return run_prompt(predictor, prompt), cached is not None
            except ValueError as e:
                raise UserError(str(e)) from None

    # ---- requests ----

    def segment(self, annot: dict | None, text: str | None, points: Any, backbone: Any, window: Any,
                compare: Any = NONE, compare_window: Any = None, progress: Progress = _no_progress) -> RawResult:
        """Segment the annotator's image (``{'image': LoadedImage, 'boxes': [...]}``) with its boxes, ``text`` and
        click ``points`` on the selected backbone, and on ``compare`` (a second backbone, or 'none') beside it.
        A comparison backbone that cannot be built becomes a message; the main one raises WeightsError."""
        if not annot or annot.get('image') is None:
            raise UserError('Upload an image or pick an example first.')
        loaded: LoadedImage = annot['image']
        prompt = make_image_prompt(loaded, annot.get('boxes') or [], text, points)
        specs = [page_spec(backbone, window, self.backbones)]
        if compare not in (None, '', NONE):
            second = page_spec(compare, compare_window, self.backbones)
            if second != specs[0]:
                specs.append(second)
        panels, messages = [], []
        for i, spec in enumerate(specs):
            try:
                entry = self.model_entry(spec, 'image', progress)
            except WeightsError as e:
                if i == 0:
                    raise
                messages.append(f'Comparison: {e}')  # the main result is still shown
                continue
            progress((i + 0.5) / len(specs), desc=f'{entry.title}: segmenting')
            result, cached = self.run_image(entry, loaded, prompt)
            panels.append(Panel.from_result(entry.title, entry.short_title, result, cached))
        # every backbone has SAM3's text encoder: one note per phrase it cut (clicks use no text)
        notes = [n for n in [loaded.note, *prompt.notes, *text_notes([] if prompt.points else prompt.texts)] if n]
        return RawResult(loaded.image, panels, notes, messages)

    def track(self, video: str | None, text: str | None, first_frame: dict | None, backbone: Any, window: Any,
              progress: Progress = _no_progress) -> tuple[Path, str]:
        """Track ``text`` (one noun phrase: every instance) and/or one box drawn on the first frame through a video;
        returns (a browser-playable video, status markdown)."""
        from sam3_cradio.jobs.track import track_video

        if not video:
            raise UserError('Upload a video first (or pick the example).')
        texts = parse_texts(text)
        if len(texts) > 1:
            raise UserError('Video tracking takes one noun phrase (SAM3 tracks every instance of it); '
                            f'got {len(texts)}: {texts}')
        a = self.args
        frames, fps, (W, H), note = read_video(video, a.max_video_frames, a.max_video_side)
        box = None
        boxes: Sequence[dict] = (first_frame or {}).get('boxes') or []
        if boxes:
            xyxy = parse_box(boxes[0], H, W)
            s = frames.shape[2] / W  # to the downscaled frames
            box = [float(v) * s for v in xyxy]
        if not texts and box is None:
            raise UserError('Give a prompt: a noun phrase (e.g. "person"), or a box on the first frame.')
        entry = self.model_entry(page_spec(backbone, window, self.backbones), 'video', progress)
        out_dir = Path(tempfile.mkdtemp(dir=self.workdir))
        progress(0.1, desc=f'{entry.title}: waiting for the video model')
        with entry.run_lock:
            model = entry.model or self.models.get(*entry.key).model  # rebuilt if evicted meanwhile
            summary = track_video(model, frames, text=texts[0] if texts else None, box=box,
                                  out=out_dir / 'tracked.mp4', progress=True, fps=fps)
        out = to_browser_video(Path(summary.out), out_dir)
        objs = ', '.join(f'#{i}' for i in summary.object_ids) or 'none'
        status = (f'**{entry.title}**: tracked {summary.frames} frames ({summary.width}x{summary.height}, '
                  f'{summary.fps:.3g} fps) in {summary.seconds:.1f} s '
                  f'({summary.seconds / max(1, summary.frames):.2f} s/frame); objects: {objs}.')
        for n in [note, *text_notes(texts)]:
            if n:
                status += f'\n\nℹ {n}'
        return out, status

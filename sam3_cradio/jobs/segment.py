"""Segment many images with one prompt: a generator over ``(path, Sam3Result)`` (:func:`iter_segment`) and a
resumable, sharded job that writes machine-readable files (:func:`segment_to_files`, ``sam3-cradio segment``).

Both decode and resize images in DataLoader worker processes (:mod:`.loader`) and run ``batch`` images through
the trunk at once (sam3's ``Sam3Processor.set_image_batch``); each image's features are then prompted on their
own through :class:`~sam3_cradio.predictor.Sam3ImagePredictor`.

The job is the evaluation runner's loop (:mod:`sam3_cradio.evaluation.runner`): its unit is a batch of ``batch``
consecutive images (in the fixed order of :func:`~.inputs.collect_images`), so that an image is always encoded
in the same batch, whether the run was interrupted and resumed or sharded over torchrun ranks, and the files come
out byte-identical. Records (RLE masks, boxes, scores, labels) are streamed to ``<out>/records``; the files of
``formats`` (:mod:`.formats`) are written from them at the end, so rerunning a finished job with another
``--format`` only writes files.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..files import check_writable
from ..options import ModelOptions
from ..predictor import ImageFeatures, Sam3ImagePredictor, Sam3Result, check_text
from ..registry import DEFAULT_BACKBONE
from .formats import result_to_record
from .inputs import ImageList, InputSource, collect_images
from .loader import ImageDataset, LoadedImage, iter_batches

if TYPE_CHECKING:
    from ..evaluation.models import ModelConfig

__all__ = ['Prompts', 'JobTiming', 'iter_segment', 'segment_to_files', 'default_workers', 'check_out_folder']

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompts:
    """What to segment in every image: noun phrases (each a category), exemplar boxes and/or clicks, in pixels.

    The rules of ``sam3-cradio segment``: points (with an optional box: the clicked object's) segment one object
    (label 'point'); boxes without points are exemplars, optionally with one phrase (label: the phrase, else
    'visual'); phrases alone find every instance of each (label: the phrase).
    """

    text: tuple[str, ...] = ()
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    points: tuple[tuple[float, float, int], ...] = ()

    @classmethod
    def make(cls, text: str | Sequence[str] | None = None, boxes: Sequence[Sequence[float]] | None = None,
             points: Sequence[Sequence[float]] | None = None) -> Prompts:
        """Checked prompts; ``text`` may hold several comma-separated phrases."""
        if isinstance(text, str):
            text = text.split(',')
        phrases = tuple(dict.fromkeys(check_text(t) for t in (text or ())))
        bx = tuple(tuple(float(v) for v in b) for b in (boxes or ()))
        if any(len(b) != 4 for b in bx):
            raise ValueError(f'a box is 4 numbers x0 y0 x1 y1 in pixels, got {list(boxes)}')
        pts = []
        for p in points or ():
            if len(p) != 3 or p[2] not in (0, 1):
                raise ValueError(f'a point is X Y LABEL with LABEL 1 (object) or 0 (background), got {list(p)}')
            pts.append((float(p[0]), float(p[1]), int(p[2])))
        if not (phrases or bx or pts):
            raise ValueError('give a prompt: --text, --box or --point')
        if pts and phrases:
            raise ValueError('--point segments one clicked object and takes no --text; drop one of them')
        if pts and len(bx) > 1:
            raise ValueError('--point takes at most one --box (the box of the clicked object)')
        if bx and not pts and len(phrases) > 1:
            raise ValueError(f'--box takes at most one --text phrase (the exemplars\' category), got {list(phrases)}')
        return cls(phrases, bx, tuple(pts))

    @property
    def categories(self) -> list[str]:
        """The labels results can carry, in order: one category per phrase, else 'visual' or 'point'."""
        if self.points:
            return ['point']
        if self.text:
            return list(self.text)
        return ['visual']

    def to_json(self) -> dict[str, Any]:
        return {'text': list(self.text), 'boxes': [list(b) for b in self.boxes],
                'points': [list(p) for p in self.points]}

    def predict(self, predictor: Sam3ImagePredictor) -> Sam3Result:
        """Run these prompts on the image set in ``predictor``."""
        if self.points:
            return predictor.predict_points([p[:2] for p in self.points], [p[2] for p in self.points],
                                            box=self.boxes[0] if self.boxes else None, multimask_output=False)
        if self.boxes:
            return predictor.predict_boxes(list(self.boxes), text=self.text[0] if self.text else None)
        return predictor.predict_text(list(self.text))


def check_out_folder(out: str | os.PathLike) -> Path:
    """Refuse, before any work, an output folder that is a file or cannot be created or written (one-line
    ValueErrors naming ``--out``)."""
    check_writable(out, 'output folder --out', folder=True)
    return Path(out)


def default_workers() -> int:
    """Decoding processes when none is asked for: the CPUs left beside the main process, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# --------------------------------------------------------------------------------------------------------------
# Batched encoding
# --------------------------------------------------------------------------------------------------------------

def _split_batch(tree: Any, n: int, i: int) -> Any:
    """Item ``i`` (batch dim kept, size 1) of every tensor of a batched ``backbone_out``."""
    if torch.is_tensor(tree):
        if tree.ndim == 0 or tree.shape[0] != n:
            raise RuntimeError(f'backbone output tensor of shape {tuple(tree.shape)} has no batch dimension of {n}')
        return tree[i:i + 1]
    if isinstance(tree, dict):
        return {k: _split_batch(v, n, i) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_split_batch(v, n, i) for v in tree)
    return tree


def encode_batch(predictor: Sam3ImagePredictor, images: Sequence[LoadedImage]) -> list[ImageFeatures]:
    """Run the trunk and neck once over ``images`` (each (3, R, R) uint8 at the predictor's side) and return each
    image's features, for :meth:`Sam3ImagePredictor.set_features`."""
    from PIL import Image

    if not images:
        return []
    pils = [Image.fromarray(x.image.permute(1, 2, 0).numpy()) for x in images]
    side = predictor.image_size
    if any(p.size != (side, side) for p in pils):
        raise ValueError(f'images must be resized to the model side {side} first')
    t0 = time.perf_counter()
    with predictor._amp():  # the predictor's own precision policy (bf16 autocast on CUDA)
        state = predictor.processor.set_image_batch(pils)
    predictor._sync()
    seconds = (time.perf_counter() - t0) / len(images)
    n = len(images)
    return [ImageFeatures(_split_batch(state['backbone_out'], n, i), x.size, seconds) for i, x in enumerate(images)]


@torch.inference_mode()
def _segment_loaded(predictor: Sam3ImagePredictor, prompts: Prompts, batch: Sequence[LoadedImage]
                    ) -> list[Sam3Result | str]:
    """Each loaded image's result, or its error message (an unreadable image, a prompt that does not fit it).
    (Inference mode here, not around the generators' ``yield``: the caller's code must not run in it.)"""
    good = [x for x in batch if x.error is None]
    features = dict(zip((x.index for x in good), encode_batch(predictor, good)))
    out: list[Sam3Result | str] = []
    for x in batch:
        if x.error is not None:
            out.append(x.error)
            continue
        predictor.set_features(features.pop(x.index))
        try:
            out.append(prompts.predict(predictor))
        except ValueError as e:  # e.g. a box outside this (smaller) image
            out.append(str(e))
    return out


def _batches(n: int, batch: int) -> list[list[int]]:
    if batch < 1:
        raise ValueError(f'--batch must be at least 1, got {batch}')
    return [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]


def iter_segment(
        model: torch.nn.Module | Sam3ImagePredictor,
        images: InputSource | Sequence[InputSource] | ImageList,
        text: str | Sequence[str] | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        *,
        batch: int = 1,
        workers: int = 0,
        threshold: float = 0.5,
        on_error: str = 'raise',
) -> Iterator[tuple[Path, Sam3Result]]:
    """Segment every image of ``images`` with the same prompts; yields ``(path, result)`` in image order.

    Args:
        model: a SAM3 image model (``build_sam3(..., mode='image')``; ``interactive=True`` for points) or a
            predictor built on one.
        images: what :func:`~.inputs.collect_images` takes (files, folders, globs, lists of paths).
        text, boxes, points: the prompts (:class:`Prompts`).
        batch: images per trunk pass.
        workers: decoding processes (0: decode in this process).
        threshold: minimum detection score (when ``model`` is a model, not a predictor).
        on_error: 'raise' (ValueError naming the image) or 'skip' (logged as a warning, not yielded) for an image
            that cannot be read or does not fit a prompt.

    Example:
        >>> for path, result in iter_segment(model, 'photos/', text='cat, dog', batch=4, workers=2):
        ...     print(path.name, len(result), result.labels)
    """
    if on_error not in ('raise', 'skip'):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    prompts = Prompts.make(text, boxes, points)
    listed = images if isinstance(images, ImageList) else collect_images(images)
    predictor = model if isinstance(model, Sam3ImagePredictor) else Sam3ImagePredictor(
        model, confidence_threshold=threshold)
    dataset = ImageDataset(listed.paths, predictor.image_size)
    for loaded in iter_batches(dataset, _batches(len(listed), batch), workers):
        for x, result in zip(loaded, _segment_loaded(predictor, prompts, loaded)):
            path = listed.paths[x.index]
            if isinstance(result, str):
                if on_error == 'raise':
                    raise ValueError(f'{path}: {result}' if str(path) not in result else result)
                _logger.warning('skipping %s: %s', path, result)
                continue
            yield path, result


# --------------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------------

@dataclass
class JobTiming:
    """Where this run's time went on rank 0, from the model being ready to the last file written.

    ``model_seconds`` is what the predictor times as the model (``Sam3Result.timings``: the trunk and neck over a
    batch, SAM3's decoder with its mask upsampling per prompt); everything else in ``seconds`` is outside it:
    waiting for decoded images, the results' conversion, RLE encoding, records and the output files
    (``writing_seconds`` of them at the end).
    """

    images: int = 0
    seconds: float = 0.0
    encoder_seconds: float = 0.0
    decoder_seconds: float = 0.0
    writing_seconds: float = 0.0
    _t0: float | None = field(default=None, repr=False)

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def add(self, result: Sam3Result) -> None:
        self.images += 1
        self.encoder_seconds += result.timings.get('encoder', 0.0)
        self.decoder_seconds += result.timings.get('decoder', 0.0)

    def stop(self) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None

    @property
    def model_seconds(self) -> float:
        return self.encoder_seconds + self.decoder_seconds

    def to_dict(self) -> dict[str, Any]:
        s = self.seconds
        return {'images': self.images, 'seconds': round(s, 4), 'model_seconds': round(self.model_seconds, 4),
                'encoder_seconds': round(self.encoder_seconds, 4), 'decoder_seconds': round(self.decoder_seconds, 4),
                'writing_seconds': round(self.writing_seconds, 4),
                'images_per_s': self.images / s if s > 0 else None,
                'outside_model_share': (s - self.model_seconds) / s if s > 0 else None}


@dataclass
class _Job:
    images: ImageList
    prompts: Prompts
    formats: tuple[str, ...]
    threshold: float
    batch: int
    workers: int
    model: ModelConfig  # the model, labelled and checked, and where the run writes
    chunks: list[list[int]] = field(default_factory=list)


def segment_to_files(
        images: InputSource | Sequence[InputSource] | ImageList,
        out: str | os.PathLike,
        text: str | Sequence[str] | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        *,
        formats: Sequence[str] = ('coco',),
        threshold: float = 0.5,
        batch: int = 1,
        workers: int | None = None,
        model: ModelOptions | str = DEFAULT_BACKBONE,
        threads: int | None = None,
        overwrite: bool = False,
        progress: bool = True,
        echo: Callable[[str], Any] | None = None,
) -> dict[str, Any] | None:
    """Segment ``images`` into files under ``out``; rerunning the same call resumes. Returns the summary JSON
    (``<out>/summary.json``) on rank 0, None on other torchrun ranks.

    Files (:mod:`.formats`, ``formats`` any of ``coco, json, png, yolo, voc, annotated``): ``coco.json``,
    ``json/<name>.json``, ``masks/<name>.png``, ``yolo/labels/<name>.txt`` + ``yolo/data.yaml``,
    ``voc/<name>.xml``, ``annotated/<name>.png``, where ``<name>`` is the image's relative name without its
    extension; always ``errors.json`` (images that could not be read or prompted, skipped). Bookkeeping:
    ``run.json``, ``records/``, ``summary.json`` / ``summary.md`` (counts, timing).

    Images inside ``out`` are left out (outputs are never inputs), so ``out`` may lie in an input folder. ``out``
    is checked (a writable folder, or one that can be made) before anything is built or written.

    The model is built here (in every torchrun rank) from ``model``: checked
    :class:`~sam3_cradio.options.ModelOptions` (backbone, window, resolution, weights, device, dtype, trunk
    runtime), or a backbone name (``NAME`` or ``NAME:WINDOW``) with released weights. ``workers`` defaults to
    :func:`default_workers`.
    """
    from ..evaluation.models import model_configs
    from ..evaluation.runner import RunOptions, run_eval
    from .formats import check_formats

    formats = check_formats(formats)
    prompts = Prompts.make(text, boxes, points)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f'--threshold must be in [0, 1], got {threshold}')
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise ValueError(f'--workers must be >= 0, got {workers}')
    if not isinstance(model, ModelOptions):
        model = ModelOptions.make(model)
    if model.seed is None:  # random weights are the same in every rank and every resumed run
        model = model.replace(seed=0)
    out = check_out_folder(out)
    # the report's config: what was asked (the model and the inputs are in its fingerprint)
    run = RunOptions(out=out, overwrite=overwrite, device=model.device, progress=progress, threads=threads,
                     config={'prompts': prompts.to_json(), 'formats': list(formats), 'threshold': threshold,
                             'batch': batch, 'workers': workers})
    # hydra checks the model's overrides before any image is listed or file written
    config = model_configs([model], run)[0]
    listed = images if isinstance(images, ImageList) else collect_images(images, exclude=[out])
    stems = listed.stems()  # two inputs that would write the same files fail here too
    job = _Job(listed, prompts, formats, float(threshold), int(batch), workers, config,
               _batches(len(listed), int(batch)))
    return run_eval(_eval_spec(job, stems, config.spec.title()), run, echo=echo)


def _eval_spec(job: _Job, stems: list[str], title: str) -> Any:
    """The job as the evaluation runner's :class:`~sam3_cradio.evaluation.runner.EvalSpec`: one unit per batch."""
    from ..evaluation.models import build_model
    from ..evaluation.runner import EvalSpec
    from .formats import OUTPUTS, write_outputs

    out = Path(job.model.run.out)
    fingerprint = {**job.model.options.fingerprint(), 'prompts': job.prompts.to_json(), 'threshold': job.threshold,
                   'batch': job.batch, 'num_images': len(job.images), 'inputs': job.images.digest(),
                   'root': str(job.images.root)}

    timing = JobTiming()

    def make_stream(ctx: Any, chunk_ids: list[int]) -> Iterator[tuple[int, dict[str, Any]]]:
        model = build_model(job.model.options, 'image', ctx.device, interactive=bool(job.prompts.points))
        predictor = Sam3ImagePredictor(model, confidence_threshold=job.threshold)
        dataset = ImageDataset(job.images.paths, predictor.image_size)
        timing.start()  # the clock starts with the model built: decoding workers and all
        batches = iter_batches(dataset, [job.chunks[c] for c in chunk_ids], job.workers)
        for c, loaded in zip(chunk_ids, batches):
            images = []
            for x, r in zip(loaded, _segment_loaded(predictor, job.prompts, loaded)):
                entry = {'index': x.index, 'name': job.images.names[x.index]}
                if isinstance(r, str):
                    entry['error'] = r
                else:
                    timing.add(r)
                    entry.update(result_to_record(r))
                images.append(entry)
            yield c, {'images': images}  # the runner records it before asking for the next batch: on the clock
        timing.stop()

    def finalize(records: Mapping[int, Any], ids: list[int]) -> Any:
        t0 = time.perf_counter()
        report = write_outputs(records, ids, job.images, stems, job.prompts.categories, job.formats, out,
                               {'prompts': job.prompts.to_json(), 'model': title, 'threshold': job.threshold})
        timing.writing_seconds = time.perf_counter() - t0
        timing.seconds += timing.writing_seconds
        report.metrics['timing'] = t = timing.to_dict()  # this run, rank 0: a resumed run times only what it did
        if t['images']:
            report.table += (f"\n\nThis run (rank 0): {t['images']} images in {t['seconds']:.1f} s, "
                             f"{t['images_per_s']:.2f} images/s; {1 - t['outside_model_share']:.0%} of the time in "
                             'the model')
        return report

    return EvalSpec('segment', list(range(len(job.chunks))), fingerprint, None, finalize, 'img',
                    f'## sam3-cradio segment: {title}', make_stream=make_stream,
                    sizes={c: len(chunk) for c, chunk in enumerate(job.chunks)}, report_name='summary',
                    outputs=OUTPUTS)

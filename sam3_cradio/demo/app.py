"""Gradio demo: SAM3 with NVIDIA C-RADIOv4 (or SAM3's own PE) as the vision backbone.

    sam3-cradio demo --tiny                      # random tiny weights: try the interface, no downloads
    sam3-cradio demo                             # C-RADIOv4-H, weights from the Hugging Face cache (or downloaded)
    sam3-cradio demo --sam3-checkpoint sam3.pt --cradio-checkpoint cradio_v4_h=c-radio_v4-h_half.pth.tar

Image tab: text prompts (comma-separated), positive / negative exemplar boxes, point clicks; a confidence slider
that only re-filters the last result. Video tab: track a text prompt or a first-frame box through a short clip.
A backbone selector (and an optional second backbone side by side) shows the measured encoder / decoder times.

This module holds the page layout and its event handlers only; the work is done by gradio-free modules of
:mod:`sam3_cradio.demo` (models and caches, input checks, rendering, video files), shared by all sessions through
a :class:`~sam3_cradio.demo.state.DemoState`. User errors (unreadable or huge images, empty prompts, boxes outside
the image, long videos, missing weights) become a message in the page, never a stack trace.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from sam3_cradio.assets import EXAMPLE_IMAGES_DIR, example_images
from sam3_cradio.registry import get_backbone

from .inputs import NEGATIVE, NONE, POSITIVE, LoadedImage, UserError, parse_points, read_annotation, window_menu
from .options import DemoOptions
from .results import SCORE_FLOOR, TABLE_HEADERS, RawResult, draw_points, page_error, render
from .state import DemoState
from .videos import make_example_video, preview_video

try:
    import gradio as gr
    from gradio_image_annotation import image_annotator
except ImportError as e:  # the demo extra is not installed: main() says so in one line
    gr = image_annotator = None
    _GRADIO_MISSING: ImportError | None = e
else:
    _GRADIO_MISSING = None

__all__ = ['build_app', 'launch_kwargs', 'serve', 'Handlers', 'annotator_class']

_CSS = """
#weights-status .prose, #image-status .prose, #video-status .prose { font-size: 0.95em; }
#weights-status pre, #image-status pre, #video-status pre { white-space: pre-wrap; }
"""


@contextlib.contextmanager
def _no_type_stubs() -> Iterator[None]:
    """Gradio writes a ``.pyi`` stub next to the module of every component class it sees defined (for IDEs):
    here, into the installed package. Defining our subclass without it keeps the package directory untouched."""
    meta = sys.modules.get('gradio.component_meta')
    if meta is None or not hasattr(meta, 'create_or_modify_pyi'):
        yield
        return
    original = meta.create_or_modify_pyi
    meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        meta.create_or_modify_pyi = original


@cache
def annotator_class(max_side: int, max_pixels: float) -> type:
    """``gradio_image_annotation.image_annotator`` whose value is ``{'image': LoadedImage, 'boxes': [...]}``
    (:func:`~sam3_cradio.demo.inputs.read_annotation`: odd formats converted, huge images refused or downscaled,
    a message instead of a stack trace, boxes as floats in the original image's pixels).

    A subclass, not a patched instance: gradio re-creates components from their constructor arguments per session.
    It reuses the parent's frontend (block name and component class id).
    """
    with _no_type_stubs():
        class PromptAnnotator(image_annotator):
            def get_block_name(self) -> str:
                return 'image_annotator'

            @classmethod
            def get_component_class_id(cls) -> str:
                return image_annotator.get_component_class_id()

            def preprocess(self, payload: Any) -> dict | None:
                if payload is None:
                    return None
                data = payload if isinstance(payload, dict) else payload.model_dump()
                try:
                    return read_annotation(data, max_side, max_pixels)
                except UserError as e:
                    raise gr.Error(str(e), title='Cannot use this image') from None

    return PromptAnnotator


def _toast(kind: str, text: str) -> None:
    gr.Warning(text, duration=15 if kind == 'error' else 10)


class Handlers:
    """The page's event handlers: page values in, gradio updates out; the work is :class:`DemoState`'s."""

    def __init__(self, state: DemoState) -> None:
        self.state = state
        self.args = state.args

    def _error(self, e: Exception, what: str) -> str:
        """Toast a failed request and return its status markdown (no server paths in either)."""
        err = page_error(e, what, self.state.private_dirs)
        _toast(err.kind, err.toast)
        return err.status

    # ---- menus ----

    def on_backbone(self, value: str) -> dict:
        choices, selected = window_menu(get_backbone(value or self.args.backbone))
        return gr.update(choices=choices, value=selected, interactive=len(choices) > 1)

    def on_compare(self, value: str) -> tuple[dict, dict]:
        if value in (None, '', NONE):
            return gr.update(visible=False), gr.update(visible=False, value=None)
        choices, selected = window_menu(get_backbone(value))
        return (gr.update(visible=True, choices=choices, value=selected, interactive=len(choices) > 1),
                gr.update(visible=True))

    # ---- image and clicks ----

    def on_image(self, annot: dict | None, points: Any, current_key: str | None) -> tuple:
        """The annotator changed (new image, or boxes drawn): show the image in the click pad. A new image drops
        the clicks and the previous result (the slider must not re-draw another image's detections)."""
        if not annot or annot.get('image') is None:
            return None, [], None, None, None, None
        loaded: LoadedImage = annot['image']
        key = loaded.key
        if key == current_key:
            pts, labs = parse_points(points) if points else ([], [])
            return draw_points(loaded.image, pts, labs, loaded.scale), points, key, gr.skip(), gr.skip(), gr.skip()
        return loaded.image, [], key, None, None, None

    def add_point(self, annot: dict | None, points: Any, label: str, evt: gr.SelectData) -> tuple:
        if not annot or annot.get('image') is None:
            gr.Warning('Upload an image first')
            return gr.skip(), points
        loaded: LoadedImage = annot['image']
        x, y = evt.index[0] / loaded.scale, evt.index[1] / loaded.scale
        points = [*(points or []), [round(x, 1), round(y, 1), 1 if label == POSITIVE else 0]]
        pts, labs = parse_points(points)
        return draw_points(loaded.image, pts, labs, loaded.scale), points

    def clear_points(self, annot: dict | None) -> tuple:
        if not annot or annot.get('image') is None:
            return None, []
        return annot['image'].image, []

    # ---- segment, slider ----

    def segment(self, annot: dict | None, text: str, points: Any, backbone: str, window: str, compare: str,
                compare_window: str, threshold: float, progress: Any = gr.Progress() if gr else None) -> tuple:
        try:
            raw = self.state.segment(annot, text, points, backbone, window, compare, compare_window, progress)
            view = render(raw, float(self.args.threshold if threshold is None else threshold))
        except Exception as e:  # a message in the page; outputs unchanged
            return gr.skip(), gr.skip(), self._error(e, 'Segmentation failed'), gr.skip(), gr.skip()
        return view.image, view.second, view.status, view.table, raw

    def refilter(self, raw: RawResult | None, threshold: float) -> tuple:
        if raw is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        view = render(raw, float(threshold))
        return view.image, view.second, view.status, view.table

    # ---- video ----

    def on_video(self, video: str | None) -> tuple:
        if not video:
            return None, ''
        try:
            preview = preview_video(video, self.args.max_video_frames)
        except UserError as e:
            return None, self._error(e, 'Reading the video failed')
        if preview.too_long:
            gr.Warning(preview.message)
        return {'image': preview.first, 'boxes': []}, preview.message

    def track(self, video: str | None, text: str, first_frame: dict | None, backbone: str, window: str,
              progress: Any = gr.Progress(track_tqdm=True) if gr else None) -> tuple:
        try:
            out, status = self.state.track(video, text, first_frame, backbone, window, progress)
        except Exception as e:  # a message in the page; the output unchanged
            return gr.skip(), self._error(e, 'Tracking failed')
        return str(out), status

    # ---- start-up ----

    def status_tick(self) -> tuple:
        text, final = self.state.startup_status()
        return text, gr.Timer(active=not final)


def build_app(args: DemoOptions) -> Any:
    """The Gradio Blocks of the demo for ``args`` (:func:`sam3_cradio.commands.demo.parse_args` makes them from
    ``sam3-cradio demo`` arguments). The shared :class:`DemoState` is ``app.sam3_demo`` (close it with
    ``app.sam3_demo.close()``)."""
    if gr is None:
        raise ImportError(f'the demo needs gradio and gradio-image-annotation: pip install "sam3-cradio[demo]" '
                          f'({_GRADIO_MISSING})')
    st = DemoState(args)
    st.private_dirs.append(Path(gr.utils.get_upload_folder()))  # uploads: their paths stay private
    h = Handlers(st)
    Annotator = annotator_class(int(args.max_image_side), float(args.max_image_megapixels) * 1e6)
    labels = [get_backbone(n).label for n in st.backbones]
    window_choices, window_value = window_menu(args.spec.backbone, args.spec.window)
    examples = example_images()

    with gr.Blocks(title='SAM3 × C-RADIOv4') as demo:
        gr.Markdown(
            '## SAM3 × C-RADIOv4\n'
            "Meta's **SAM3** (open-vocabulary detection, segmentation and tracking) with NVIDIA's **C-RADIOv4** "
            "as its vision backbone, or SAM3's own Perception Encoder for comparison. Prompt an image with text, "
            'exemplar boxes or clicks; track objects through a short video.')
        weights_md = gr.Markdown(st.startup_status()[0], elem_id='weights-status')
        with gr.Row():
            backbone = gr.Dropdown(labels, value=args.spec.backbone.label, label='Backbone', elem_id='backbone')
            window = gr.Dropdown(window_choices, value=window_value, elem_id='window',
                                 allow_custom_value=True,  # choices follow the backbone; checked in the handler
                                 label='C-RADIO attention window (tokens; global = full attention)',
                                 interactive=len(window_choices) > 1)

        with gr.Tabs():
            with gr.Tab('Image', id='image'):
                with gr.Row():
                    with gr.Column(scale=1):
                        annot = Annotator(
                            label='Image: upload or pick an example, then drag boxes (positive / negative exemplars)',
                            label_list=[POSITIVE, NEGATIVE], label_colors=[(34, 197, 94), (239, 68, 68)],
                            use_default_label=True, image_type='numpy', sources=['upload', 'clipboard'],
                            box_min_size=4, elem_id='image-input')
                        if examples:
                            gr.Examples([[{'image': str(p), 'boxes': []}] for p in examples], inputs=[annot],
                                        label='Examples', example_labels=[p.stem for p in examples])
                        text = gr.Textbox(label='Text prompt: noun phrases, comma-separated', lines=1,
                                          placeholder='e.g. cup, spoon', elem_id='text-prompt')
                        with gr.Accordion('Point clicks: segment one object, SAM-style', open=False):
                            with gr.Row():
                                click_label = gr.Radio([POSITIVE, NEGATIVE], value=POSITIVE, label='Next click')
                                clear_btn = gr.Button('Clear clicks', size='sm')
                            click_img = gr.Image(label='Click on the object (clicks override text prompts)',
                                                 interactive=False, type='numpy', format='png', elem_id='click-pad')
                            points = gr.JSON(value=[], label='Clicks: [x, y, label] in image pixels')
                        with gr.Row():
                            compare = gr.Dropdown([NONE, *labels], value=NONE, label='Compare with (side by side)',
                                                  elem_id='compare')
                            compare_window = gr.Dropdown(['global'], value='global', label='its window',
                                                         visible=False, allow_custom_value=True)
                        run_btn = gr.Button('Segment', variant='primary', elem_id='segment-button')
                    with gr.Column(scale=1):
                        threshold = gr.Slider(SCORE_FLOOR, 1.0, value=max(SCORE_FLOOR, args.threshold), step=0.01,
                                              label='Confidence threshold (only re-filters: no model call)',
                                              elem_id='threshold')
                        with gr.Row():
                            out1 = gr.Image(label='Result', type='numpy', format='png', interactive=False,
                                            elem_id='output-image')
                            out2 = gr.Image(label='Comparison', type='numpy', format='png', interactive=False,
                                            visible=False, elem_id='compare-image')
                        status = gr.Markdown(label='Status', elem_id='image-status')
                        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, label='Detections',
                                             max_height=300)
                raw = gr.State(None)
                image_key = gr.State(None)

            with gr.Tab('Video', id='video'):
                with gr.Row():
                    with gr.Column(scale=1):
                        video = gr.Video(label='Video (short clips: every frame is processed)', sources=['upload'],
                                         include_audio=True, elem_id='video-input')
                        example_video = make_example_video(examples[0], st.workdir) if examples else None
                        if example_video is not None:
                            gr.Examples([[str(example_video)]], inputs=[video], label='Example',
                                        example_labels=['pan over a photo'])
                        vtext = gr.Textbox(label='Text prompt: one noun phrase (every instance is tracked)',
                                           placeholder='e.g. person', elem_id='video-text')
                        first_frame = Annotator(label='First frame: optionally drag a box around one object',
                                                label_list=['object'], use_default_label=True, single_box=True,
                                                image_type='numpy', sources=None, box_min_size=4,
                                                elem_id='first-frame')
                        track_btn = gr.Button('Track', variant='primary', elem_id='track-button')
                    with gr.Column(scale=1):
                        vout = gr.Video(label='Tracked', interactive=False, elem_id='video-output')
                        vstatus = gr.Markdown(
                            f'Videos up to {args.max_video_frames} frames; frames larger than '
                            f'{args.max_video_side} px are downscaled.', label='Status', elem_id='video-status')

        with gr.Accordion('About the weights and this demo', open=False):
            gr.Markdown(
                '- **SAM3 weights** (`sam3.pt`, gated Hugging Face repo `facebook/sam3`) and **C-RADIOv4 weights** '
                '(`nvidia/C-RADIOv4-H`, `nvidia/C-RADIOv4-SO400M`) come from the Hugging Face cache, or from '
                '`--sam3-checkpoint` / `--cradio-checkpoint BACKBONE=PATH`.\n'
                '- The confidence slider filters the last result; a new prompt on the same image reuses its '
                'encoded features (the encoder time shows *cached*).\n'
                '- Timings are measured per request: encoder = image backbone + neck, decoder = prompt encoding, '
                'detection and masks.')

        timer = gr.Timer(2.0, active=not st.startup_status()[1])

        # events; api_name: the endpoints gradio_client calls (/segment, /refilter, /track, /status)
        backbone.change(h.on_backbone, backbone, window, queue=False, api_name=False)
        compare.change(h.on_compare, compare, [compare_window, out2], queue=False, api_name=False)
        annot.change(h.on_image, [annot, points, image_key], [click_img, points, image_key, out1, out2, raw],
                     concurrency_limit=None, api_name=False)
        click_img.select(h.add_point, [annot, points, click_label], [click_img, points], concurrency_limit=None,
                         api_name=False)
        clear_btn.click(h.clear_points, annot, [click_img, points], concurrency_limit=None, api_name=False)
        seg_inputs = [annot, text, points, backbone, window, compare, compare_window, threshold]
        seg_outputs = [out1, out2, status, table, raw]
        run_btn.click(h.segment, seg_inputs, seg_outputs, api_name='segment', concurrency_limit=args.concurrency,
                      concurrency_id='image')
        text.submit(h.segment, seg_inputs, seg_outputs, api_name=False, concurrency_limit=args.concurrency,
                    concurrency_id='image')
        threshold.change(h.refilter, [raw, threshold], [out1, out2, status, table], api_name='refilter',
                         concurrency_limit=None, trigger_mode='always_last', show_progress='hidden')
        video.change(h.on_video, video, [first_frame, vstatus], concurrency_limit=None, api_name=False)
        track_btn.click(h.track, [video, vtext, first_frame, backbone, window], [vout, vstatus], api_name='track',
                        concurrency_limit=1, concurrency_id='video')
        demo.load(h.status_tick, None, [weights_md, timer], api_name='status')
        timer.tick(h.status_tick, None, [weights_md, timer], api_name=False)

    demo.queue(default_concurrency_limit=args.concurrency)
    demo.sam3_demo = st  # for tests and embedding: the shared state (models, feature cache, counters)
    if args.preload:
        st.preload()
    return demo


def launch_kwargs(args: DemoOptions) -> dict[str, Any]:
    """``demo.launch`` arguments for ``args`` (host, port, share, limits, styling)."""
    return dict(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                max_file_size=args.max_file_size, css=_CSS, theme=gr.themes.Soft(), ssr_mode=False,
                allowed_paths=[str(EXAMPLE_IMAGES_DIR)])


def serve(args: DemoOptions) -> int:
    """Build the app and serve it until interrupted; returns the exit code (``sam3-cradio demo``)."""
    if gr is None:
        print(f'error: the demo needs gradio and gradio-image-annotation ({_GRADIO_MISSING}): '
              f'pip install "sam3-cradio[demo]"', file=sys.stderr)
        return 2
    demo = build_app(args)
    try:
        demo.launch(**launch_kwargs(args))
    finally:
        demo.sam3_demo.close()
    return 0

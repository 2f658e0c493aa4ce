"""The models of a run: each :class:`~sam3_cradio.options.ModelOptions` labelled, its config checked before
anything is written, its own output folder when several run side by side, and built as if alone on its rank."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import write_atomic
from ..options import ModelOptions
from ..registry import ModelSpec
from ..reporting import jsonable, markdown_table
from .distributed import init_distributed, single_process_env
from .runner import EvalSpec, RunOptions, quiet, run_eval

if TYPE_CHECKING:
    import torch

_logger = logging.getLogger(__name__)

__all__ = ['ModelConfig', 'model_configs', 'check_model_config', 'build_model', 'model_label', 'run_models']


@dataclass(frozen=True)
class ModelConfig:
    """One model of a (side-by-side) run: its label (the output subfolder when there are several), its checked
    options and the run options it writes with."""

    label: str
    options: ModelOptions
    run: RunOptions

    @property
    def spec(self) -> ModelSpec:
        return self.options.spec


def check_model_config(spec: ModelSpec, overrides: Sequence[str]) -> None:
    """Compose and resolve the model config of ``spec`` with the hydra ``overrides``, as the build will: an unknown
    key (with the nearest known one), a malformed override or a value of the wrong type is a one-line ValueError
    here, before any output is written or any model built."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..build import compose_config

    # the build fills the tokenizer's vocabulary path, the one mandatory value the registry does not
    cfg = compose_config(spec, ['bpe_path=filled-by-the-build', *overrides])
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ValueError(f'the {spec.name} config does not resolve with overrides {list(overrides)}: '
                         f'{str(e).splitlines()[0]}') from None


def model_label(spec: ModelSpec) -> str:
    """'cradio_v4_h', 'cradio_v4_h-w12', 'pe-768px': a model's output subfolder in a side-by-side run."""
    b = spec.backbone
    label = spec.name if spec.window == b.default_window else f'{spec.name}-w{spec.window}'
    return label if spec.resolution == b.image_size else f'{label}-{spec.resolution}px'


def model_configs(models: Sequence[ModelOptions], run: RunOptions) -> list[ModelConfig]:
    """Label ``models`` and check each one's hydra overrides (:func:`check_model_config`) before anything is built
    or written. With several models each writes to ``run.out / label``."""
    out = []
    for m in models:
        check_model_config(m.spec, m.overrides)
        out.append(ModelConfig(model_label(m.spec), m, run))
    labels = [c.label for c in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f'--backbone names a model twice: {labels}')
    if len(out) > 1:
        out = [ModelConfig(c.label, c.options, run.replace(out=Path(run.out) / c.label)) for c in out]
    return out


def build_model(options: ModelOptions, mode: str, device: torch.device, interactive: bool = True
                ) -> torch.nn.Module:
    """``build_sam3`` of ``options`` on this rank's ``device``, seeded, as if in a single process."""
    from ..build import build_sam3

    with single_process_env():
        return build_sam3(options.replace(device=str(device)), mode=mode, interactive=interactive)


def run_models(configs: Sequence[ModelConfig], make_spec: Callable[[ModelConfig], EvalSpec], run: RunOptions,
               anchor: str = '', echo: Callable[[str], Any] | None = None) -> dict[str, Any] | None:
    """Run one eval for every model of ``configs`` (:func:`~.models.model_configs`: each with its own output
    folder), one after the other on the same ranks, then (rank 0, several models) write
    ``<run.out>/comparison.{json,md}``: the models' headline metrics side by side. ``echo`` as in :func:`run_eval`."""
    echo = echo or quiet
    if run.threads:
        import torch

        torch.set_num_threads(run.threads)
    ctx = init_distributed(run.device)
    try:
        results = {c.label: run_eval(make_spec(c), c.run, ctx, echo) for c in configs}
    finally:
        ctx.close()
    if not ctx.is_main:
        return None
    if len(configs) == 1:
        return results[configs[0].label]
    keys = list(dict.fromkeys(k for r in results.values() for k in r['headline']))
    rows = [[label] + [r['headline'].get(k) for k in keys] for label, r in results.items()]
    first = next(iter(results.values()))
    table = markdown_table(['model', *keys], rows, '{:.2f}')
    md = f'## {first["eval"]}: side by side ({first["num_units"]} {first["unit"]}s each)\n\n{table}\n'
    md += '\n' + '\n'.join(f'- {c.label}: {c.spec.title()}' for c in configs) + '\n'
    if anchor:
        md += f'\n{anchor}\n'
    out = Path(run.out)
    titles = {c.label: c.spec.title() for c in configs}
    comparison = jsonable({'eval': first['eval'], 'models': {k: {
        'title': titles[k], 'headline': r['headline'], 'out': str(Path(r['config']['out']))}
        for k, r in results.items()}, 'git_sha': first['git_sha']})
    write_atomic(out / 'comparison.json', json.dumps(comparison, indent=1, allow_nan=False))
    write_atomic(out / 'comparison.md', md)
    echo(md)
    _logger.info('wrote %s', out / 'comparison.md')
    return comparison

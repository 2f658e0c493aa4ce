"""`sam3-cradio bench --exemplars` (sam3_cradio.bench.exemplars): predict_boxes with many exemplar boxes against
sam3's own per-box loop, on the tiny model, ratios side by side in one process. No timing threshold: the test
checks that the rows exist, are measured and that the decoder runs were counted."""
from __future__ import annotations

import json

import pytest

from sam3_cradio.bench.exemplars import ExemplarResult, exemplar_boxes, format_exemplars
from sam3_cradio.cli import main


def test_exemplar_boxes_are_reproducible_and_inside():
    a, b = exemplar_boxes(50, (60, 80), seed=3), exemplar_boxes(50, (60, 80), seed=3)
    assert a == b and len(a) == 50
    for x0, y0, x1, y1 in a:
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60 and float(x0).is_integer()


@pytest.mark.slow
def test_bench_exemplars_tiny(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    argv = ['bench', '--exemplars', '--tiny', '--exemplar-counts', '1', '4', '12', '--exemplar-baseline-max', '4',
            '--repeats', '2', '--warmup', '0', '--json', str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    path = tmp_path / 'bench_exemplars.json'
    result = ExemplarResult.from_dict(json.loads(path.read_text()))
    assert result.config['backbone'] == 'cradio_tiny' and result.config['counts'] == [1, 4, 12]
    assert not out.exists()                                              # the encoder benchmark's file: untouched
    rows = {(r.method, r.boxes): r for r in result.rows}
    assert set(rows) == {('one_prompt', 1), ('one_prompt', 4), ('one_prompt', 12), ('per_box', 1), ('per_box', 4)}
    for (method, n), r in rows.items():
        assert r.decoder_calls == (1 if method == 'one_prompt' else n)  # one prompt: one decoder run
        assert len(r.times_s) == 2 and r.median_s > 0 and r.dtype == 'fp32'
        assert r.ratio_to_one_box == pytest.approx(r.median_s / rows[(method, 1)].median_s)
    assert rows[('per_box', 4)].ratio_to_one_prompt == pytest.approx(
        rows[('per_box', 4)].median_s / rows[('one_prompt', 4)].median_s)
    assert rows[('one_prompt', 12)].ratio_to_one_prompt is None
    table = format_exemplars(result)
    assert table in printed and (tmp_path / 'bench_exemplars.md').read_text() == table + '\n'
    assert '| 12 | fp32 |' in table and 'up to 4 boxes' in table


def test_bench_exemplars_dry_run_and_errors(tmp_path, capsys):
    assert main(['bench', '--exemplars', '--tiny', '--dry-run', '--json', str(tmp_path / 'b.json')]) == 0
    printed = capsys.readouterr().out
    assert 'predict_boxes with [1, 10, 100] boxes' in printed and "sam3's loop with [1, 10]" in printed
    assert not list(tmp_path.iterdir())
    assert main(['bench', '--exemplars', '--tiny', '--exemplar-counts', '0', '--json', str(tmp_path / 'b.json')]) == 2
    assert 'positive numbers of boxes' in capsys.readouterr().err

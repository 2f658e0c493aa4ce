"""Metrics on hand-computed cases, on real annotations shipped with scikit-image, and against sam3's evaluator.

Real data: ``skimage.data.coins()`` segmented by the scikit-image gallery recipe "Comparing edge-based and
region-based segmentation" (Sobel elevation map, markers at < 30 / > 150, watershed, hole filling, labelling),
which gives the 24 coins as instances, and ``skimage.data.horse()``, a binary silhouette (the horse is False).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from sam3_cradio.metrics import BoxPromptMIoU, BoxPromptMIoUMetric, CgF1Metric, CocoMetric, DavisMetric, average_cgf1
from sam3_cradio.metrics.davis import _bound_pix, db_eval_boundary, db_eval_iou, db_statistics, seg2bmap

# 101 recall thresholds of pycocotools' COCOeval.Params
REC_THRS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


# ---------------------------------------------------------------------------------------------------------------
# Real ground truth: coins (24 instances, category 1) and horse (1 instance, category 2)
# ---------------------------------------------------------------------------------------------------------------

def _coin_labels() -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage import data
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    segmentation = watershed(sobel(coins), markers)
    segmentation = ndi.binary_fill_holes(segmentation - 1)
    labels, n = ndi.label(segmentation)
    sizes = np.bincount(labels.ravel())
    keep = [i for i in range(1, n + 1) if sizes[i] >= 21]  # the recipe's small-object cut (21 px): drops a 2-px speck
    return np.stack([labels == i for i in keep])


def _horse_mask() -> np.ndarray:
    from skimage import data

    return ~data.horse()[None]


def _anns(masks: np.ndarray, image_id: int, category_id: int, first_id: int) -> list:
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    out = []
    for k, rle in enumerate(rles):
        out.append({'id': first_id + k, 'image_id': image_id, 'category_id': category_id, 'iscrowd': 0,
                    'segmentation': {'size': rle['size'], 'counts': rle['counts'].decode()},
                    'area': float(mask_utils.area(rle)), 'bbox': mask_utils.toBbox(rle).tolist()})
    return out


@pytest.fixture(scope='module')
def real_gt():
    coins, horse = _coin_labels(), _horse_mask()
    gt = {'images': [{'id': 1, 'height': coins.shape[1], 'width': coins.shape[2], 'file_name': 'coins.png'},
                     {'id': 2, 'height': horse.shape[1], 'width': horse.shape[2], 'file_name': 'horse.png'}],
          'annotations': _anns(coins, 1, 1, 1) + _anns(horse, 2, 2, 100),
          'categories': [{'id': 1, 'name': 'coin'}, {'id': 2, 'name': 'horse'}]}
    return gt, {1: coins, 2: horse}


def _xyxy(masks: np.ndarray) -> np.ndarray:
    xywh = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))))
    return np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]


def _feed(metric: CocoMetric, per_image: dict, scores: dict = None) -> CocoMetric:
    for image_id, masks in per_image.items():
        cat = 1 if image_id == 1 else 2
        s = np.ones(len(masks)) if scores is None else scores[image_id]
        metric.update(image_id, cat, masks, _xyxy(masks), s)
    return metric


def test_real_gt_is_what_the_recipe_gives(real_gt):
    gt, masks = real_gt
    assert len(masks[1]) == 24  # the 24 coins of skimage's coins image
    areas = [a['area'] for a in gt['annotations']]
    assert all(32 ** 2 < a < 96 ** 2 for a in areas[:24])  # coins: all "medium"
    assert areas[24] > 96 ** 2  # horse: "large"


def test_coco_perfect_predictions_give_ap_1(real_gt):
    gt, masks = real_gt
    r = _feed(CocoMetric(gt), masks).compute()
    for stats in (r.segm, r.bbox):
        for k in ('AP', 'AP50', 'AP75', 'APm', 'APl', 'AR100'):
            assert stats[k] == pytest.approx(1.0), k
        assert stats['APs'] == -1.0  # pycocotools: no small GT
    assert r.mask_ap == r.box_ap == pytest.approx(1.0)
    assert r.num_images == 2 and r.num_predictions == 25
    assert 'segm Average Precision' in str(r) and json.dumps(r.to_dict())


def test_coco_rle_input_equals_array_input(real_gt):
    gt, masks = real_gt
    a = _feed(CocoMetric(gt), masks).compute()
    m = CocoMetric(gt)
    for image_id, ms in masks.items():
        rles = [{'size': ann['segmentation']['size'], 'counts': ann['segmentation']['counts']}
                for ann in gt['annotations'] if ann['image_id'] == image_id]
        m.update(image_id, 1 if image_id == 1 else 2, rles, None, np.ones(len(rles)))  # boxes from masks
    assert m.compute().to_dict() == a.to_dict()


def test_coco_dropping_instances_gives_recall_limited_ap(real_gt):
    # 5 of 24 coins missed, all else perfect: recall 19/24 with precision 1, so the 101-point interpolated
    # precision is 1 for recall thresholds 0.00..0.79 (80 of them) and 0 above: coin AP = 80/101 at every IoU.
    gt, masks = real_gt
    kept = {1: masks[1][5:], 2: masks[2]}
    r = _feed(CocoMetric(gt), kept).compute()
    coin_ap = np.sum(REC_THRS <= 19 / 24) / 101
    assert coin_ap == 80 / 101
    for stats in (r.segm, r.bbox):
        assert stats['AP'] == pytest.approx((coin_ap + 1.0) / 2)  # mean over the 2 categories
        assert stats['AP50'] == pytest.approx((coin_ap + 1.0) / 2)
        assert stats['APm'] == pytest.approx(coin_ap)  # only coins are medium
        assert stats['APl'] == pytest.approx(1.0)  # only the horse is large
        assert stats['AR100'] == pytest.approx((19 / 24 + 1) / 2)


def test_coco_shifted_boxes_give_ap50_1_ap75_0(real_gt):
    # Shift each box right by dx = round(0.2308 w): IoU = (w - dx) / (w + dx) ~ 0.625, which passes the IoU
    # thresholds 0.50, 0.55, 0.60 and fails 0.65..0.95, so box AP50 = 1, AP75 = 0, AP = 3/10; masks untouched.
    gt, masks = real_gt
    m = CocoMetric(gt)
    for image_id, ms in masks.items():
        boxes = _xyxy(ms)
        w = boxes[:, 2] - boxes[:, 0]
        shifted = boxes + np.round(0.2308 * w)[:, None] * np.array([1, 0, 1, 0])
        ious = mask_utils.iou(np.c_[shifted[:, :2], shifted[:, 2:] - shifted[:, :2]].tolist(),
                              np.c_[boxes[:, :2], w, boxes[:, 3] - boxes[:, 1]].tolist(), [0] * len(boxes))
        assert (np.diag(ious) > 0.605).all() and (np.diag(ious) < 0.645).all()
        m.update(image_id, 1 if image_id == 1 else 2, ms, shifted, np.ones(len(ms)))
    r = m.compute()
    assert r.bbox['AP50'] == pytest.approx(1.0)
    assert r.bbox['AP75'] == pytest.approx(0.0)
    assert r.bbox['AP'] == pytest.approx(0.3)
    assert r.segm['AP'] == pytest.approx(1.0)


def test_coco_lower_scored_duplicates_keep_ap_1(real_gt):
    # Duplicates rank after every true positive: they lower precision only past full recall, where the
    # interpolated precision is already 1.
    gt, masks = real_gt
    m = CocoMetric(gt)
    for image_id, ms in masks.items():
        both = np.concatenate([ms, ms])
        m.update(image_id, 1 if image_id == 1 else 2, both, _xyxy(both), np.r_[np.ones(len(ms)), np.full(len(ms), .1)])
    r = m.compute()
    assert r.segm['AP'] == pytest.approx(1.0) and r.bbox['AP'] == pytest.approx(1.0)


def test_coco_top_scored_false_positive(real_gt):
    # One small (10x10) coin false positive on empty background, scored above every true coin: at the k-th TP
    # precision is k/(k+1), so the interpolated precision is 24/25 at every recall: coin AP = 0.96. The FP is
    # "small", so in the medium range it is ignored (unmatched and outside the range): APm = 1.
    gt, masks = real_gt
    coins = masks[1]
    union = coins.any(0)
    y, x = next((y, x) for y in range(0, union.shape[0] - 10, 5) for x in range(0, union.shape[1] - 10, 5)
                if not union[max(0, y - 2):y + 12, max(0, x - 2):x + 12].any())
    fp = np.zeros_like(coins[:1])
    fp[0, y:y + 10, x:x + 10] = True
    m = CocoMetric(gt)
    m.update(1, 1, np.concatenate([fp, coins]), _xyxy(np.concatenate([fp, coins])), np.r_[1.0, np.full(24, .9)])
    m.update(2, 2, masks[2], _xyxy(masks[2]), [1.0])
    r = m.compute()
    for stats in (r.segm, r.bbox):
        assert stats['AP'] == pytest.approx((24 / 25 + 1) / 2)
        assert stats['APm'] == pytest.approx(1.0)


def test_coco_only_updated_images(real_gt):
    gt, masks = real_gt
    coins_only = {1: masks[1]}
    assert _feed(CocoMetric(gt), coins_only).compute().mask_ap == pytest.approx(0.5)  # horse missed: AP 0
    r = _feed(CocoMetric(gt, only_updated_images=True), coins_only).compute()
    assert r.mask_ap == pytest.approx(1.0) and r.num_images == 1
    assert CocoMetric(gt).compute().mask_ap == 0.0  # nothing predicted


def test_coco_reset_and_gt_untouched(real_gt):
    gt, masks = real_gt
    before = json.dumps(gt, sort_keys=True)
    m = _feed(CocoMetric(gt), masks)
    m.compute()
    assert json.dumps(gt, sort_keys=True) == before
    assert m.reset().compute().mask_ap == 0.0


@pytest.mark.parametrize('kwargs, match', [
    (dict(image_id=7), 'not in the GT'),
    (dict(category_ids=5), r'category_ids: \[5\] are not GT category ids'),
    (dict(masks=np.zeros((1, 10, 10), bool)), 'expected 303x384'),
    (dict(masks=np.zeros((1, 303, 384), np.float32)), 'threshold'),
    (dict(masks=None), 'required for mask AP'),
    (dict(boxes=np.array([[5, 5, 1, 1]])), 'x2 >= x1'),
    (dict(scores=[1.0, 0.5]), 'expected 2 masks'),
])
def test_coco_bad_updates_say_what_was_expected(real_gt, kwargs, match):
    gt, masks = real_gt
    args = dict(image_id=1, category_ids=1, masks=masks[1][:1], boxes=None, scores=[1.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        CocoMetric(gt).update(**args)


def test_coco_bad_gt_and_repeated_image(real_gt):
    gt, masks = real_gt
    with pytest.raises(ValueError, match='lacks'):
        CocoMetric({'images': [], 'categories': []})
    with pytest.raises(ValueError, match='iou_types'):
        CocoMetric(gt, iou_types=('keypoints',))
    with pytest.raises(ValueError, match='got neither'):
        CocoMetric(gt, iou_types=('bbox',)).update(1, 1, None, None, [1.0])
    boxes_only = CocoMetric(gt, iou_types=('bbox',)).update(1, 1, None, _xyxy(masks[1]), np.ones(24)).compute()
    assert boxes_only.segm is None and boxes_only.bbox['APm'] == pytest.approx(1.0)
    with pytest.raises(KeyError, match='masks were not evaluated'):
        boxes_only.mask_ap
    m = CocoMetric(gt).update(1, 1, masks[1], None, np.ones(24))
    with pytest.raises(ValueError, match='already updated'):
        m.update(1, 1, masks[1], None, np.ones(24))


# ---------------------------------------------------------------------------------------------------------------
# Box-prompt mIoU
# ---------------------------------------------------------------------------------------------------------------

def _square(n: int, size: int = 64) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[:n, :n] = True
    return m


def test_box_prompt_miou_hand_case():
    gt20 = _square(20)
    half = gt20.copy()
    half[:, 10:] = False  # IoU 0.5
    gt30, gt40 = _square(30), _square(40)
    quarter = _square(20)  # 400 / 1600 = 0.25 of the 40x40 square
    m = BoxPromptMIoUMetric()
    m.update(gt20, half, area=400.0)  # small, 0.5
    m.update(gt30, gt30, area=900.0)  # small, 1.0
    m.update(gt40, quarter, area=2000.0)  # medium, 0.25
    m.update(gt40, np.zeros_like(gt40), area=10000.0)  # large, 0.0
    m.update(gt30, gt30, area=1024.0)  # exactly 32**2: small and medium (closed ranges), 1.0
    m.update(gt30, gt30, area=0.5)  # area < 1: skipped, as EfficientViT's run_box
    r = m.compute()
    assert r.miou == pytest.approx((0.5 + 1 + 0.25 + 0 + 1) / 5)
    assert r.miou_small == pytest.approx((0.5 + 1 + 1) / 3)
    assert r.miou_medium == pytest.approx((0.25 + 1) / 2)
    assert r.miou_large == pytest.approx(0.0)
    assert (r.count, r.count_small, r.count_medium, r.count_large, r.num_skipped) == (5, 3, 2, 1, 1)
    assert 'area=medium' in str(r) and r.to_dict()['count'] == 5


def test_box_prompt_miou_batched_equals_single_and_reset():
    rng = np.random.default_rng(0)
    gt = rng.random((4, 32, 32)) > 0.5
    pred = rng.random((4, 32, 32)) > 0.5
    areas = np.array([10.0, 2000.0, 5000.0, 20000.0])
    a = BoxPromptMIoU().update(gt, pred, areas).compute()
    b = BoxPromptMIoU()
    for g, p, ar in zip(gt, pred, areas):
        b.update(g, p, ar)
    assert a.to_dict() == b.compute().to_dict()
    assert math.isnan(b.reset().compute().miou)
    with pytest.raises(ValueError, match='differs from gt_mask'):
        b.update(gt[0], pred[0, :16], 10.0)
    with pytest.raises(ValueError, match='expected a scalar or 4 values'):
        b.update(gt, pred, [1.0, 2.0])


# ---------------------------------------------------------------------------------------------------------------
# cgF1
# ---------------------------------------------------------------------------------------------------------------

def _rect(r0: int, r1: int, c0: int, c1: int, size: int = 16) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[r0:r1, c0:c1] = True
    return m


def _stack(*masks: np.ndarray, size: int = 16) -> np.ndarray:
    return np.stack(masks) if masks else np.zeros((0, size, size), bool)


def _sam3_f1(tp: int, fp: int, fn: int) -> float:
    """F1 with sam3's epsilons: P = TP/(TP+FP+1e-4), R = TP/(TP+FN+1e-4), F1 = 2PR/(P+R+1e-4)."""
    p, r = tp / (tp + fp + 1e-4), tp / (tp + fn + 1e-4)
    return 2 * p * r / (p + r + 1e-4)


def _cgf1_hand_pairs():
    gt_a, gt_b = _rect(0, 4, 0, 4), _rect(8, 11, 8, 10)  # 16 px, 6 px
    pred_b = _rect(8, 10, 8, 10)  # 4 px inside gt_b: IoU 2/3
    fp = _rect(12, 16, 0, 4)  # touches no GT
    return [
        # P1: one exact hit, one IoU-2/3 hit, one false positive, and a 0.3-scored duplicate of gt_a
        ('p1', _stack(gt_a, gt_b), _stack(gt_a, pred_b, fp, gt_a), [0.9, 0.8, 0.7, 0.3]),
        ('p2', _stack(gt_a), _stack(gt_a), [0.2]),  # GT, only a low-score prediction: image-level miss
        ('p3', _stack(), _stack(), []),  # negative, nothing predicted: true negative
        ('p4', _stack(), _stack(fp), [0.8]),  # negative with a kept prediction: image-level false positive
        ('p5', _stack(), _stack(fp), [0.1]),  # negative, prediction below threshold: true negative
    ]


def test_cgf1_hand_case_at_sam3_threshold():
    m = CgF1Metric()  # score threshold 0.5, as SAM3
    for pair in _cgf1_hand_pairs():
        m.update(*pair)
    r = m.compute()
    # image level: TP = p1, FN = p2, TN = p3 + p5, FP = p4
    assert r.il_counts == {'TP': 1, 'FP': 1, 'TN': 2, 'FN': 1}
    mcc = (1 * 2 - 1 * 1) / (math.sqrt(2 * 2 * 3 * 3) + 1e-6)
    assert r.il_mcc == pytest.approx(mcc, abs=1e-12)
    # IoU thresholds 0.50..0.65 (4): TP 2, pmFP 1 (p1's fp), FN 1 (p2); 0.70..0.95 (6): TP 1, pmFP 2, FN 2.
    # p4's false positive is not a pmF1 FP (negative pair).
    assert r.tp.tolist() == [2] * 4 + [1] * 6 and r.positive_micro_fp.tolist() == [1] * 4 + [2] * 6
    assert r.fn.tolist() == [1] * 4 + [2] * 6 and r.fp.tolist() == [2] * 4 + [3] * 6
    pmf1 = (4 * _sam3_f1(2, 1, 1) + 6 * _sam3_f1(1, 2, 2)) / 10
    assert r.pmf1 == pytest.approx(100 * pmf1, abs=1e-9)
    assert r.cgf1 == pytest.approx(100 * pmf1 * mcc, abs=1e-9)
    assert r.cgf1 == pytest.approx(100 * 7 / 90, abs=5e-3)  # without the epsilons: (1/6) * (4*2/3 + 6*1/3) / 10
    assert r.cgf1_50 == pytest.approx(100 * _sam3_f1(2, 1, 1) * mcc, abs=1e-9)
    assert r.cgf1_75 == pytest.approx(100 * _sam3_f1(1, 2, 2) * mcc, abs=1e-9)
    assert r.score_threshold == 0.5 and 'score >= 0.5' in str(r)
    assert json.dumps(r.to_dict())


def test_cgf1_score_threshold_is_applied_and_recorded():
    m = CgF1Metric(score_threshold=0.3)  # the duplicate in p1 is now kept: a second FP there
    for pair in _cgf1_hand_pairs():
        m.update(*pair)
    r = m.compute()
    assert r.il_counts == {'TP': 1, 'FP': 1, 'TN': 2, 'FN': 1}
    mcc = 1 / (6 + 1e-6)
    pmf1 = (4 * _sam3_f1(2, 2, 1) + 6 * _sam3_f1(1, 3, 2)) / 10
    assert r.cgf1 == pytest.approx(100 * pmf1 * mcc, abs=1e-9)
    assert r.cgf1 == pytest.approx(100 * 0.4 / 6, abs=5e-3)
    assert r.score_threshold == 0.3 and 'score >= 0.3' in str(r)


def test_cgf1_oracle_picks_the_most_favourable_gt_set_and_skips_non_exhaustive():
    gt_a, gt_b = _rect(0, 4, 0, 4), _rect(8, 12, 8, 12)
    pred = _stack(gt_a)
    # annotator a drew two instances, annotator b one: b agrees with the prediction, so the pair is perfect
    oracle = CgF1Metric().update('p', _stack(gt_a, gt_b), pred, [0.9], extra_gts=[_stack(gt_a)]).compute()
    single = CgF1Metric().update('p', _stack(gt_a), pred, [0.9]).compute()
    assert oracle.to_dict() == single.to_dict()
    # a set that makes the pair a true negative wins
    tn = CgF1Metric().update('n', _stack(gt_a), _stack(), [], extra_gts=[_stack()]).compute()
    assert tn.il_counts == {'TP': 0, 'FP': 0, 'TN': 1, 'FN': 0}
    # non-exhaustive in any set: not evaluated
    m = CgF1Metric().update('p', _stack(gt_a), pred, [0.9])
    m.update('q', _stack(gt_a), _stack(), [], extra_gts=[_stack(gt_a)], exhaustive=[True, False])
    r = m.compute()
    assert (r.num_pairs, r.num_skipped) == (1, 1)


def test_cgf1_crowd_gt_is_dropped_and_bad_input_is_reported():
    gt_a = _rect(0, 4, 0, 4)
    r = CgF1Metric().update('p', _stack(gt_a), _stack(), [], gt_iscrowd=[True]).compute()
    assert r.il_counts['TN'] == 1
    m = CgF1Metric().update('p', _stack(gt_a), _stack(gt_a), [0.9])
    with pytest.raises(ValueError, match='already updated'):
        m.update('p', _stack(gt_a), _stack(gt_a), [0.9])
    with pytest.raises(ValueError, match='expected a scalar or 1 values'):
        m.update('q', _stack(gt_a), _stack(gt_a), [0.9, 0.1])
    with pytest.raises(ValueError, match='share one'):
        m.update('q', _stack(gt_a), np.zeros((1, 8, 8), bool), [0.9])
    with pytest.raises(ValueError, match='iou_type'):
        CgF1Metric(iou_type='keypoints')
    with pytest.raises(RuntimeError, match='no image-phrase pair'):
        CgF1Metric().compute()


def test_average_cgf1_is_the_plain_subset_mean():
    r1 = CgF1Metric().update('p', _stack(_rect(0, 4, 0, 4)), _stack(_rect(0, 4, 0, 4)), [0.9]).compute()
    r2 = CgF1Metric().update('p', _stack(_rect(0, 4, 0, 4)), _stack(), []).compute()
    avg = average_cgf1({'a': r1, 'b': r2})
    assert avg['cgf1'] == pytest.approx((r1.cgf1 + r2.cgf1) / 2)


def _random_saco(rng: np.random.Generator, n_pairs: int, size: int = 24):
    """Random SA-Co-like pairs: three annotators' GT sets of overlapping boxes/masks and scored predictions.

    GT boxes often come with a shifted twin, so that one prediction overlaps two GT instances and the matching
    (Hungarian on IoU, not greedy) decides the counts.
    """
    def rect():
        y, x = rng.integers(0, size - 6, 2)
        h, w = rng.integers(5, size // 2, 2)
        return [int(x), int(y), int(min(x + w, size)), int(min(y + h, size))]

    def jitter(b, d=1):
        d = rng.integers(-d, d + 1, 4)
        x1, y1 = max(0, b[0] + d[0]), max(0, b[1] + d[1])
        return [int(x1), int(y1), int(max(x1 + 1, min(size, b[2] + d[2]))), int(max(y1 + 1, min(size, b[3] + d[3])))]

    pairs = []
    for _ in range(n_pairs):
        base = [rect() for _ in range(int(rng.integers(0, 4)))]
        base += [jitter(b, 3) for b in base if rng.random() < 0.5]  # overlapping twins
        gts = [[jitter(b) for b in base if rng.random() > 0.15] for _ in range(3)]
        crowd = [[bool(rng.random() < 0.1) for _ in g] for g in gts]
        preds = [jitter(b, 2) for b in base if rng.random() > 0.3] + [rect() for _ in range(int(rng.integers(0, 3)))]
        scores = [float(np.round(rng.random(), 3)) for _ in preds]
        exhaustive = [bool(rng.random() > 0.1) for _ in range(3)]
        pairs.append((gts, crowd, preds, scores, exhaustive))
    return pairs


def _box_masks(boxes, size: int = 24) -> np.ndarray:
    out = np.zeros((len(boxes), size, size), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        out[k, y1:y2, x1:x2] = True
        out[k, y1, x1] = (k % 2 == 0)  # not quite boxes: mask and box IoUs differ
    return out


def _write_saco(tmp_path, pairs, size: int = 24):
    files, preds = [], []
    for a in range(3):
        images, anns = [], []
        for i, (gts, crowd, _, _, exhaustive) in enumerate(pairs):
            images.append({'id': i, 'height': size, 'width': size, 'is_instance_exhaustive': exhaustive[a]})
            masks = _box_masks(gts[a], size)
            for k, (b, m, c) in enumerate(zip(gts[a], masks, crowd[a])):
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                anns.append({'id': len(anns) + 1, 'image_id': i, 'category_id': 1, 'iscrowd': int(c),
                             'area': float(mask_utils.area(rle)), 'bbox': [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                             'segmentation': {'size': rle['size'], 'counts': rle['counts'].decode()}})
        path = tmp_path / f'gt_{a}.json'
        path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': [{'id': 1}]}))
        files.append(str(path))
    for i, (_, _, boxes, scores, _) in enumerate(pairs):
        for b, m, s in zip(boxes, _box_masks(boxes, size), scores):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            preds.append({'image_id': i, 'category_id': 1, 'score': s, 'bbox': [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                          'segmentation': {'size': rle['size'], 'counts': rle['counts'].decode()}})
    pred_path = tmp_path / 'pred.json'
    pred_path.write_text(json.dumps(preds))
    return files, str(pred_path)


@pytest.mark.parametrize('iou_type', ['segm', 'bbox'])
@pytest.mark.parametrize('n_gt_sets', [1, 3])
def test_cgf1_equals_sam3_cgf1_evaluator(tmp_path, iou_type, n_gt_sets):
    cgf1_eval = pytest.importorskip('sam3.eval.cgf1_eval')
    pairs = _random_saco(np.random.default_rng(7), 40)
    gt_files, pred_file = _write_saco(tmp_path, pairs)
    expected = cgf1_eval.CGF1Evaluator(gt_files[:n_gt_sets], iou_type=iou_type).evaluate(pred_file)

    m = CgF1Metric(iou_type=iou_type)
    for i, (gts, crowd, preds, scores, exhaustive) in enumerate(pairs):
        if iou_type == 'segm':
            gts_in, pred_in = [_box_masks(g) for g in gts], _box_masks(preds)
        else:
            gts_in, pred_in = [np.asarray(g, np.float64).reshape(-1, 4) for g in gts], np.reshape(preds, (-1, 4))
        m.update(i, gts_in[0], pred_in, scores, gt_iscrowd=crowd[0], extra_gts=gts_in[1:n_gt_sets],
                 extra_gt_iscrowd=crowd[1:n_gt_sets], exhaustive=exhaustive[:n_gt_sets])
    r = m.compute()
    assert set(r.sam3_stats) == set(expected)
    for k, v in expected.items():
        assert r.sam3_stats[k] == pytest.approx(v, abs=1e-12), k
    assert r.cgf1 == pytest.approx(100 * expected[f'cgF1_eval_{iou_type}_cgF1'])
    assert 0 < r.num_skipped < len(pairs) and r.il_counts['TN'] > 0 and r.il_counts['FP'] > 0


# ---------------------------------------------------------------------------------------------------------------
# DAVIS J&F
# ---------------------------------------------------------------------------------------------------------------

def _sq(r0, r1, c0, c1, size=100) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_davis_bound_pix_and_boundary_map():
    assert _bound_pix((100, 100), 0.008) == 2  # ceil(0.008 * 141.4) = ceil(1.13)
    assert _bound_pix((480, 854), 0.008) == 8  # DAVIS 480p: ceil(0.008 * 979.7) = ceil(7.84)
    assert _bound_pix((100, 100), 3) == 3  # bound_th >= 1 is pixels
    b = seg2bmap(_sq(20, 40, 20, 40))
    # 1-px boundary offset half a pixel towards the origin: outer top row and left column, inner bottom row and
    # right column; 4 * 20 = 80 pixels
    assert b.sum() == 80 and b[19, 19:40].all() and b[20:40, 19].all() and b[39, 20:40].all() and b[20:39, 39].all()


def test_davis_j_and_f_hand_case():
    # 20x20 GT square and the same square 3 px to the right, 100x100 frame (bound_pix 2, a radius-2 disk):
    # J = (20*17) / (2*400 - 340) = 17/23. Boundary pixels within distance 2 of the other boundary (80 each):
    # predicted top 20/21, left 5/20 (the 2 rows near each corner row), bottom 19/20, right 0/19 -> P = 44/80;
    # GT top 20/21, left 0/20, bottom 20/20, right 4/19 -> R = 44/80. F = 0.55.
    gt, pred = _sq(20, 40, 20, 40), _sq(20, 40, 23, 43)
    assert db_eval_iou(gt, pred) == pytest.approx(17 / 23)
    assert db_eval_boundary(gt, pred) == pytest.approx(0.55)
    assert db_eval_boundary(gt, gt) == 1.0


@pytest.mark.parametrize('gt_empty, pred_empty, j, f', [
    (True, True, 1.0, 1.0),  # toolkit: J = 1 for an empty union; P = R = 1 with no boundaries
    (True, False, 0.0, 0.0),  # P = 0, R = 1
    (False, True, 0.0, 0.0),  # P = 1, R = 0
])
def test_davis_empty_masks_follow_the_toolkit(gt_empty, pred_empty, j, f):
    full, empty = _sq(10, 30, 10, 30), np.zeros((100, 100), bool)
    gt, pred = (empty if gt_empty else full), (empty if pred_empty else full)
    assert float(db_eval_iou(gt, pred)) == j
    assert float(db_eval_boundary(gt, pred)) == f
    r = DavisMetric(skip_first_last=False).update('s', 1, pred[None], gt[None]).compute()
    assert (r.j_mean, r.f_mean, r.jf_mean) == (j, f, (j + f) / 2)


def test_davis_sequence_skips_first_and_last_frame():
    gt_sq, shifted, empty = _sq(20, 40, 20, 40), _sq(20, 40, 23, 43), np.zeros((100, 100), bool)
    gt = np.stack([gt_sq] * 5)
    # frames 0 and 4 are wrong (empty) and must not count; frames 1..3: J = 1, 17/23, 0 and F = 1, 0.55, 0
    pred = np.stack([empty, gt_sq, shifted, empty, empty])
    r = DavisMetric().update('seq', 1, pred, gt).compute()
    js, fs = [1.0, 17 / 23, 0.0], [1.0, 0.55, 0.0]
    assert r.j_mean == pytest.approx(np.mean(js)) and r.f_mean == pytest.approx(np.mean(fs))
    assert r.jf_mean == pytest.approx((np.mean(js) + np.mean(fs)) / 2)
    assert r.j_recall == pytest.approx(2 / 3) and r.f_recall == pytest.approx(2 / 3)
    # 3 frames: db_statistics' 4 bins are [0:2], [1:2], [1:3], [2:3]; decay = mean(frames 0-1) - frame 2
    assert r.j_decay == pytest.approx((1 + 17 / 23) / 2) and r.f_decay == pytest.approx((1 + 0.55) / 2)
    assert r.num_frames == 3 and 'first/last frames skipped' in str(r)
    kept = DavisMetric(skip_first_last=False).update('seq', 1, pred, gt).compute()
    assert kept.j_mean == pytest.approx((1 + 17 / 23) / 5)


def test_davis_global_mean_is_over_objects():
    gt = np.stack([_sq(10, 30, 10, 30)] * 4)
    m = DavisMetric()
    m.update('a', 1, gt, gt)  # J&F 1
    m.update('a', 2, np.zeros_like(gt), gt)  # lost: J&F 0
    m.update('b', 1, gt, gt)  # J&F 1
    r = m.compute()
    assert r.jf_mean == pytest.approx(2 / 3)  # over the 3 objects (the toolkit), not (0.5 + 1) / 2 over sequences
    assert r.per_sequence == {'a': {'J': 0.5, 'F': 0.5, 'J&F': 0.5}, 'b': {'J': 1.0, 'F': 1.0, 'J&F': 1.0}}
    assert set(r.per_object) == {'a_1', 'a_2', 'b_1'}
    d = r.to_dict()
    assert d['J&F-Mean'] == r.jf_mean and json.dumps(d)
    assert math.isclose(m.reset().update('b', 1, gt, gt).compute().jf_mean, 1.0)


def test_davis_statistics_and_errors():
    mean, recall, decay = db_statistics(np.array([1.0, 1.0, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]))
    # 8 frames: ids = round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7; first bin [0:3], last bin [5:8]
    assert (mean, recall) == (pytest.approx(2.75 / 8), 0.25) and decay == pytest.approx((1 + 1 + 0.5) / 3)
    m = DavisMetric()
    gt = np.zeros((4, 8, 8), bool)
    with pytest.raises(ValueError, match='differs from gt_masks'):
        m.update('s', 1, gt[:, :4], gt)
    with pytest.raises(ValueError, match='leave none'):
        m.update('s', 1, gt[:2], gt[:2])
    with pytest.raises(ValueError, match=r'\(N, H, W\)'):
        m.update('s', 1, gt[0], gt[0])
    m.update('s', 1, gt, gt)
    with pytest.raises(ValueError, match='already added'):
        m.update('s', 1, gt, gt)
    with pytest.raises(RuntimeError, match='no object'):
        DavisMetric().compute()

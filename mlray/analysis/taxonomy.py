"""What a model name says about the model: its architecture family and its pretraining regime.

timm names a set of weights ``<architecture>.<pretrained tag>`` (``resnet50.a1_in1k``,
``vit_base_patch16_224.augreg2_in21k_ft_in1k``, ``convnext_base.clip_laion2b_augreg_ft_in12k_in1k``); names
from before timm 0.9, imagenet-testbed's names and a run config's models may have no tag
(``tf_efficientnet_b0_ns``, ``ig_resnext101_32x8d``, ``resnext101_32x8d_swsl``).

**Family** (:func:`family`): the architecture name (before the ``.``), lower-cased, without the prefixes that name
a weight port or an add-on (:data:`STRIPPED_PREFIXES`: ``tf_``, ``tv_``, ``gluon_``, ``legacy_``, ``ig_``,
``ssl_``, ``swsl_``, ``adv_``, ``ens_adv_``, ``jx_``, ``dm_``, ``eca_``, ``gc_``, ``ese_``, ``bat_``); then the
first entry of :data:`FAMILY_PREFIXES` it starts with (``wide_resnet``, ``inception_resnet``, ``deit3``,
``eva02``, ``regnetz``, ``nf_`` -> ``nfnet`` ...), else the leading letters of its first ``_``/``-``-separated
word, with a directly following version ``v<digits>`` kept: ``resnet50d`` -> ``resnet``, ``resnetv2_50x1_bit``
-> ``resnetv2``, ``vit_base_patch16_224`` -> ``vit``, ``efficientnet-b0`` -> ``efficientnet``.

**Pretraining regime** (:func:`pretraining`): one of :data:`REGIMES`, from the words of the pretrained tag (split
at ``_``, ``-`` and ``.``); the rules are tried in this order and the first that matches wins:

====================  =================================================================================
regime                words (or architecture words) that select it
====================  =================================================================================
``image-text``        ``clip``, ``openai``, ``laion*``, ``webli``, ``siglip*``, ``dfn*``, ``metaclip``,
                      ``datacomp*``; or ``clip`` / ``siglip*`` in the architecture
``jft``               ``jft*``, ``ns``, ``noisystudent`` (Noisy Student on JFT-300M)
``ig-yfcc``           ``ig1b``, ``ig3b``, ``ig``, ``instagram``, ``wsl``, ``swsl``, ``ssl``, ``yfcc*``, ``swag``
                      (weakly / semi-supervised web-scale pretraining: Instagram, YFCC-100M)
``self-supervised``   ``mim``, ``mae``, ``fcmae``, ``seer``, ``m30m``, ``m38m``, ``dino*``, ``simclr*``,
                      ``swav``, ``moco*``, ``byol``, ``simsiam``; or a BEiT architecture (``beit*``)
``in21k``             ``in21k``, ``in22k``, ``in12k``, ``in21ft1k``, ``in22ft1k``, ``imagenet21k``,
                      ``imagenet11k``, ``bitm``, ``teacher`` (ImageNet-21k / 22k / its 12k subset, then 1k)
``in1k-distilled``    ``dist``, ``distilled``, ``ssld``, ``usi``; or ``distilled`` in the architecture
``in1k-adversarial``  ``ap``, ``adv``, ``advprop`` (AdvProp, adversarial training)
``in1k``              anything else: ImageNet-1k only
====================  =================================================================================

``*`` = any continuation. A name without a tag is read the same way from the words of the whole name
(``tf_efficientnet_b0_ns`` -> ``jft``, ``ssl_resnet50`` -> ``ig-yfcc``); where they name no regime, timm's
default weights of that tag-less name decide (:data:`TAGLESS_DEFAULTS`: ``*_sam`` -> ``in1k``, ``vit_*`` and
``swin_base/large_*`` -> ``in21k``, ``cait_*`` and ``levit_*`` -> ``in1k-distilled``, ``*_miil`` -> ``in21k``
...), else ``in1k``. The rule is checked against timm's ``model_metadata-in1k.csv`` (its ``pretrain`` labels mapped by
:data:`METADATA_REGIMES`) in ``tests/test_analysis.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REGIMES: tuple[str, ...] = (
    "image-text",
    "jft",
    "ig-yfcc",
    "self-supervised",
    "in21k",
    "in1k-distilled",
    "in1k-adversarial",
    "in1k",
)
"""Every pretraining regime, in the order the rules are tried (the first that matches wins)."""

REGIME_LABELS: dict[str, str] = {
    "image-text": "image-text (CLIP, SigLIP …)",
    "jft": "JFT-300M (Noisy Student)",
    "ig-yfcc": "Instagram / YFCC (weakly or semi-supervised)",
    "self-supervised": "self-supervised (MIM, MAE, BEiT …)",
    "in21k": "ImageNet-21k/22k/12k, fine-tuned on 1k",
    "in1k-distilled": "ImageNet-1k, distilled",
    "in1k-adversarial": "ImageNet-1k, adversarial (AdvProp …)",
    "in1k": "ImageNet-1k only",
}
"""Each regime in words (legends, tables)."""

_WORDS: dict[str, tuple[str, ...]] = {
    "image-text": ("clip", "openai", "laion*", "webli", "siglip*", "dfn*", "metaclip", "datacomp*"),
    "jft": ("jft*", "ns", "noisystudent"),
    "ig-yfcc": ("ig1b", "ig3b", "ig", "instagram", "wsl", "swsl", "ssl", "yfcc*", "swag"),
    "self-supervised": (
        "mim",
        "mae",
        "fcmae",
        "seer",
        "m30m",
        "m38m",
        "dino*",
        "simclr*",
        "swav",
        "moco*",
        "byol",
        "simsiam",
    ),  # fmt: skip
    "in21k": ("in21k", "in22k", "in12k", "in21ft1k", "in22ft1k", "imagenet21k", "imagenet11k", "bitm", "teacher"),
    "in1k-distilled": ("dist", "distilled", "ssld", "usi"),
    "in1k-adversarial": ("ap", "adv", "advprop"),
}
_ARCH_WORDS: dict[str, tuple[str, ...]] = {
    "image-text": ("clip", "siglip*"),
    "self-supervised": ("beit*",),
    "in1k-distilled": ("distilled",),
}

TAGLESS_DEFAULTS: tuple[tuple[str, str], ...] = (
    (r"_sam$", "in1k"),
    (r"^vit_", "in21k"),
    (r"^swin_(base|large)_", "in21k"),
    (r"^tresnet_m$", "in21k"),
    (r"_miil$", "in21k"),
    (r"^cait_", "in1k-distilled"),
    (r"^levit_", "in1k-distilled"),
)
"""timm's default weights of tag-less names whose words name no regime: (regular expression searched in the
lower-cased name, regime); the first match wins. Used only for names without a tag."""

METADATA_REGIMES: dict[str, str] = {
    "in1k": "in1k",
    "in1k-dist": "in1k-distilled",
    "in1k-ap": "in1k-adversarial",
    "in1k-adv": "in1k-adversarial",
    "in21k": "in21k",
    "in21k-selfsl": "self-supervised",
    "jft300m-ns": "jft",
    "ig1b-wsl": "ig-yfcc",
    "ig1b-swsl": "ig-yfcc",
    "yfc-semisl": "ig-yfcc",
}
"""timm's ``model_metadata-in1k.csv`` ``pretrain`` labels as regimes (for the cross-check)."""

STRIPPED_PREFIXES: tuple[str, ...] = ("tf_", "tv_", "gluon_", "legacy_", "ig_", "ssl_", "swsl_", "ens_adv_", "adv_",
                                      "jx_", "dm_", "eca_", "gc_", "ese_", "bat_")  # fmt: skip
"""Prefixes of an architecture name that name a weight port or an add-on, not the family."""

FAMILY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("wide_resnet", "wide_resnet"),
    ("inception_resnet", "inception_resnet"),
    ("inceptionresnet", "inception_resnet"),
    ("inception_next", "inception_next"),
    ("tiny_vit", "tiny_vit"),
    ("res2next", "res2net"),
    ("res2net", "res2net"),
    ("deit3", "deit3"),
    ("beit3", "beit3"),
    ("eva02", "eva02"),
    ("regnetz", "regnetz"),
    ("regnet", "regnet"),
    ("nf_", "nfnet"),
    ("cs3", "cspnet"),
    ("csp", "cspnet"),
    ("halo2botnet", "halonet"),
    ("se_resnext", "seresnext"),
    ("se_resnet", "seresnet"),
    ("fixresnext", "resnext"),
    ("fixresnet", "resnet"),
    ("fixpnasnet", "pnasnet"),
)
"""(prefix, family) for the architectures the leading-letters rule would name wrongly; the first match wins."""


@dataclass(frozen=True)
class ModelName:
    """A model name split into its ``architecture`` (before the first ``.``) and its pretrained ``tag`` (after it;
    ``""`` when the name has none)."""

    name: str
    architecture: str
    tag: str


def split_name(name: str) -> ModelName:
    """``resnet50.a1_in1k`` -> architecture ``resnet50``, tag ``a1_in1k``; a name without a ``.`` has tag ``""``.

    >>> split_name("resnet50.a1_in1k")
    ModelName(name='resnet50.a1_in1k', architecture='resnet50', tag='a1_in1k')
    """
    arch, _, tag = name.strip().partition(".")
    return ModelName(name, arch, tag)


def _words(text: str) -> list[str]:
    """The lower-cased words of a name or tag (split at ``_``, ``-``, ``.``, ``/`` and spaces)."""
    return [w for w in re.split(r"[_\-.\s/]+", text.lower()) if w]


def _match(words: list[str], patterns: tuple[str, ...]) -> str | None:
    """The first word equal to a pattern (or, for a pattern ending in ``*``, starting with it); None if none."""
    for w in words:
        for p in patterns:
            if w == p or (p.endswith("*") and w.startswith(p[:-1])):
                return w
    return None


def _strip_prefixes(arch: str) -> str:
    """The lower-cased architecture name without the :data:`STRIPPED_PREFIXES` (repeatedly)."""
    a = arch.lower()
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if a.startswith(prefix) and len(a) > len(prefix):
                a, changed = a[len(prefix) :], True
    return a


def family(name: str) -> str:
    """The architecture family of a model name (module docstring).

    >>> [family(n) for n in ("resnet50.a1_in1k", "tf_efficientnet_b0.ns_jft_in1k", "deit3_base_patch16_224.fb_in1k")]
    ['resnet', 'efficientnet', 'deit3']
    """
    arch = _strip_prefixes(split_name(name).architecture)
    for prefix, fam in FAMILY_PREFIXES:
        if arch.startswith(prefix):
            return fam
    first = re.split(r"[_\-]", arch, maxsplit=1)[0]
    letters = re.match(r"[a-z]*", first).group(0)  # type: ignore[union-attr]  # [a-z]* always matches
    version = re.match(r"\d+", first[len(letters) :]) if letters.endswith("v") else None
    return (letters + (version.group(0) if version else "")) or first or "unknown"


@dataclass(frozen=True)
class Pretraining:
    """A model's pretraining ``regime`` (one of :data:`REGIMES`) and the ``evidence``: what decided it, in words."""

    regime: str
    evidence: str


def pretraining(name: str) -> Pretraining:
    """The pretraining regime of a model name by the rule of the module docstring, with what decided it.

    >>> pretraining("vit_base_patch16_224.augreg2_in21k_ft_in1k")
    Pretraining(regime='in21k', evidence="tag word 'in21k'")
    >>> pretraining("tf_efficientnet_b0_ns").regime, pretraining("resnet50.a1_in1k").regime
    ('jft', 'in1k')
    """
    parts = split_name(name)
    arch_words = _words(parts.architecture)
    words = _words(parts.tag) if parts.tag else arch_words
    where = "tag" if parts.tag else "name"
    for regime in REGIMES[:-1]:
        arch_hit = _match(arch_words, _ARCH_WORDS.get(regime, ()))
        if arch_hit is not None:
            return Pretraining(regime, f"architecture word {arch_hit!r}")
        hit = _match(words, _WORDS[regime])
        if hit is not None:
            return Pretraining(regime, f"{where} word {hit!r}")
    if parts.tag:
        return Pretraining("in1k", "no regime word in the tag")
    arch = parts.architecture.lower()
    for pattern, regime in TAGLESS_DEFAULTS:
        if re.search(pattern, arch):
            return Pretraining(regime, f"timm's default weights of a tag-less name matching {pattern!r}")
    return Pretraining("in1k", "no tag and no regime word")


def input_size_from_name(name: str) -> int | None:
    """The input resolution a name states: the last ``_<3 digits>`` word of its tag, else of its architecture;
    None when it states none.

    >>> input_size_from_name("convnext_base.fb_in22k_ft_in1k_384"), input_size_from_name("resnet50.a1_in1k")
    (384, None)
    >>> input_size_from_name("vit_base_patch16_224.augreg2_in21k_ft_in1k")
    224
    """
    parts = split_name(name)
    for text in (parts.tag, parts.architecture):
        sizes = re.findall(r"(?:^|_)(\d{3})(?=_|$)", text)
        if sizes:
            return int(sizes[-1])
    return None

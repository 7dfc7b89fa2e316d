"""Tests of the CIFAR model zoo (`isokd.models`): shapes, parameter counts, feature gradients, channels_last."""
import copy

import pytest
import torch
import torch.nn as nn

from isokd.models import MODELS, Classifier, create_model

NAMES = sorted(MODELS)
NUM_CLASSES = 7  # not 10 or 100, so a hard-coded head width would show


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def first_conv(m: nn.Module) -> nn.Conv2d:
    return next(mod for mod in m.modules() if isinstance(mod, nn.Conv2d))


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def zoo() -> dict[str, Classifier]:
    "Each model built once for the whole module (construction dominates the run time of the big ones)."
    torch.manual_seed(0)
    return {name: create_model(name, num_classes=NUM_CLASSES) for name in NAMES}


def test_registry_has_the_documented_names():
    expected = {'resnet18', 'resnet34', 'resnet50', 'resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44',
                'resnet56', 'resnet110', 'resnet8x4', 'resnet32x4', 'wrn_16_1', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2',
                'vgg8', 'vgg11', 'vgg13', 'vgg16', 'vgg19', 'MobileNetV2', 'ShuffleNetV1', 'ShuffleNetV2',
                'resnet18_imagenet', 'resnet34_imagenet', 'resnet50_imagenet'}
    assert set(MODELS) == expected


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_output_shapes(zoo, batch, name, train):
    m = zoo[name].train(train)
    assert isinstance(m, Classifier)
    assert isinstance(m.feat_dim, int) and m.feat_dim > 0
    assert isinstance(m.fc, nn.Linear) and m.fc.in_features == m.feat_dim and m.fc.out_features == NUM_CLASSES
    with torch.no_grad():
        logits = m(batch)
        logits2, feats = m(batch, with_features=True)
        feats2 = m.features(batch)
    assert logits.shape == (2, NUM_CLASSES)
    assert logits2.shape == (2, NUM_CLASSES)
    assert feats.shape == (2, m.feat_dim)
    assert feats2.shape == (2, m.feat_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(feats).all()
    if not train:  # deterministic in eval mode: the three entry points agree
        torch.testing.assert_close(logits, logits2)
        torch.testing.assert_close(feats, feats2)
        torch.testing.assert_close(m.fc(feats), logits)


@pytest.mark.parametrize("name,expected", [("resnet18", 11_220_132), ("resnet50", 23_705_252)])
def test_exact_parameter_counts(name, expected):
    assert n_params(create_model(name, num_classes=100)) == expected


def test_default_num_classes_is_100():
    m = create_model('resnet8')
    assert m.num_classes == 100 and m.fc.out_features == 100


@pytest.mark.parametrize("name", NAMES)
def test_feature_gradient_reaches_first_conv(zoo, batch, name):
    m = zoo[name].train()
    m.zero_grad(set_to_none=True)
    _, feats = m(batch, with_features=True)
    assert feats.requires_grad
    feats.sum().backward()
    g = first_conv(m).weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert m.fc.weight.grad is None  # the feature path does not touch the head
    m.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches_contiguous(zoo, batch, name):
    m = copy.deepcopy(zoo[name]).eval()
    with torch.no_grad():
        ref = m(batch)
        got_input_only = m(batch.to(memory_format=torch.channels_last))
        m = m.to(memory_format=torch.channels_last)
        got = m(batch.to(memory_format=torch.channels_last))
    # eval-mode BN with fresh running statistics is the identity, so deep nets have large activations:
    # compare relative to the scale of the logits
    tol = 1e-4 * ref.abs().max().item() + 1e-5
    torch.testing.assert_close(got_input_only, ref, rtol=1e-4, atol=tol)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=tol)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        create_model('resnet19')
    msg = str(e.value)
    assert 'resnet19' in msg
    assert ', '.join(sorted(MODELS)) in msg

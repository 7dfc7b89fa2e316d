"fashion-pairs: Fashion-MNIST pairs as one 2-channel image of 100 classes, on a generated stand-in and the real set."
import pytest
import torch

import isokd.data as D
from isokd.config import KDConfig
from isokd.core import data_root
from isokd.data import (BUILTIN_DATASETS, DATASET_NAME, DATASETS, VALIDATION_SEED, DeviceLoader, ImageData, PairSpec,
                        load_data, pair_indices, pair_splits, stratified_subset)
from isokd.mixing import Mixer

HAS_FASHION_MNIST = D.DEBIAN_FASHION_MNIST.exists() or (data_root()/'FashionMNIST').exists()
needs_fashion_mnist = pytest.mark.skipif(not HAS_FASHION_MNIST, reason='Fashion-MNIST is not installed')

# the stand-in: Fashion-MNIST's shape (one grey 28 x 28 channel, 10 classes), 60 training and 40 test images a class
N_TRAIN, N_TEST = 600, 400

def standin_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    "`n` random grey 28 x 28 images whose first two pixels spell their index, labelled index mod 10."
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    x[:, 0, 0, 0], x[:, 0, 0, 1] = torch.arange(n) // 256, torch.arange(n) % 256
    return x, torch.arange(n) % 10

def ids(x: torch.Tensor, channel: int) -> torch.Tensor:
    "The stand-in index of the item in `channel` of each pair image `x` [N, 2, 28, 28]."
    return x[:, channel, 0, 0].long() * 256 + x[:, channel, 0, 1].long()

@pytest.fixture
def standin(monkeypatch):
    "'standin-pairs': pairs of a generated Fashion-MNIST-shaped source ('standin'), removed after the test."
    source = (*standin_images(N_TRAIN, 0), *standin_images(N_TEST, 1))
    monkeypatch.setitem(DATASETS, 'standin', (lambda root: source, 10, (0.5,), (0.25,), 0))
    monkeypatch.setitem(DATASETS, 'standin-pairs', PairSpec('standin'))
    monkeypatch.setitem(D.VALIDATION_SPLITS, 'standin-pairs', 200)
    D._read.cache_clear()
    yield 'standin-pairs'
    D._read.cache_clear()

def test_the_name_is_the_issues_and_legal():
    assert 'fashion-pairs' in BUILTIN_DATASETS and DATASET_NAME.fullmatch('fashion-pairs')
    assert isinstance(DATASETS['fashion-pairs'], PairSpec) and DATASETS['fashion-pairs'].source == 'fashion_mnist'
    # held in memory: the streaming path is for image folders
    assert not KDConfig(dataset='fashion-pairs').streamed
    assert KDConfig(dataset='fashion-pairs').n_val == 5000

def test_pairs_are_deterministic_per_seed_and_labelled_10a_plus_b(standin):
    d = load_data(standin, n_train=300, seed=0)
    assert isinstance(d, ImageData) and d.x_train.shape == (300, 2, 28, 28) and d.num_classes == 100
    assert d.mean == (0.5, 0.5) and d.std == (0.25, 0.25)
    again, other = load_data(standin, n_train=300, seed=0), load_data(standin, n_train=300, seed=1)
    for split in ('train', 'val', 'test'):
        for t in 'xy':
            assert torch.equal(getattr(d, f'{t}_{split}'), getattr(again, f'{t}_{split}'))
    # another seed: other training pairs, the same validation and test pairs
    assert not torch.equal(d.x_train, other.x_train)
    assert torch.equal(d.x_val, other.x_val) and torch.equal(d.x_test, other.x_test)
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        assert torch.equal(y, 10 * (ids(x, 0) % 10) + ids(x, 1) % 10)

def test_classes_are_balanced(standin):
    d = load_data(standin, n_train=300, n_test=500, seed=2)
    assert torch.bincount(d.y_train, minlength=100).tolist() == [3] * 100
    assert torch.bincount(d.y_val, minlength=100).tolist() == [2] * 100
    assert torch.bincount(d.y_test, minlength=100).tolist() == [5] * 100
    # pairs beyond one round (400 images outside the validation split: 400 pairs a round) take a second round
    more = load_data(standin, n_train=700, seed=2)
    assert (torch.bincount(more.y_train, minlength=100) - 7).abs().max() == 0
    assert torch.bincount(ids(more.x_train, 0)).max() <= 2

def test_every_test_image_is_twice_first_and_twice_second(standin):
    d = load_data(standin)
    assert len(d.y_test) == 2 * N_TEST
    for channel in (0, 1):
        assert torch.bincount(ids(d.x_test, channel), minlength=N_TEST).tolist() == [2] * N_TEST
    # no test pair holds one image twice
    assert not (ids(d.x_test, 0) == ids(d.x_test, 1)).any()

def test_no_validation_image_in_training_pairs(standin):
    d = load_data(standin, seed=3)
    train = set(ids(d.x_train, 0).tolist()) | set(ids(d.x_train, 1).tolist())
    val = set(ids(d.x_val, 0).tolist()) | set(ids(d.x_val, 1).tolist())
    assert len(val) == 200 and not train & val
    # the held-out images are the source's own validation split
    held = load_data('standin', n_val=200).x_val
    assert val == set((held[:, 0, 0, 0].long() * 256 + held[:, 0, 0, 1].long()).tolist())
    # one round of the 400 others: each of them once first and once second
    assert len(train) == 400 and len(d.y_train) == 400
    assert load_data(standin, n_val=0).x_val is None

def test_too_few_images_say_which_split(standin):
    with pytest.raises(ValueError, match='the validation pairs: pairs of 10 classes need at least 20 images'):
        load_data(standin, n_val=100)

def test_pair_indices_balance_and_rounds():
    y = torch.arange(200) % 10
    first, second = pair_indices(y, rounds=3, seed=5)
    assert torch.bincount(10 * y[first] + y[second]).tolist() == [6] * 100
    assert torch.bincount(first).tolist() == [3] * 200 and torch.bincount(second).tolist() == [3] * 200
    assert not (first == second).any()

@pytest.mark.parametrize('method', ['mixup', 'cutmix'])
def test_mixing_works_unchanged_on_pairs(standin, method):
    d = load_data(standin, n_train=300, seed=0)
    images, labels, _ = next(iter(d.loader('train', 64, 'cpu', train=True, seed=0)))
    assert isinstance(d.loader('train', 64, 'cpu'), DeviceLoader)
    torch.manual_seed(0)
    mixed, target = Mixer(method, 100)(images, labels)
    assert mixed.shape == images.shape and target.shape == (64, 100)
    assert torch.allclose(target.sum(1), torch.ones(64))
    # each row: the two pair classes of the two mixed images, and nothing else
    partner = labels.roll(1)
    assert ((target > 0).sum(1) <= 2).all()
    differ = labels != partner
    assert differ.any() and ((target > 0).sum(1)[differ] == 2).all()
    rows = torch.arange(64)
    assert torch.allclose(target[rows, labels] + target[rows, partner] * differ, torch.ones(64))

def test_cutmix_cuts_both_items_alike():
    x = torch.rand(16, 2, 28, 28)
    torch.manual_seed(1)
    mixed, target = Mixer('cutmix', 100)(x, torch.arange(16) * 6)
    kept = mixed == x
    assert torch.equal(kept[:, 0], kept[:, 1]) and not kept.all()
    # the target's share of the first label is the area kept
    assert torch.allclose(target[0, 0], kept[0, 0].float().mean())

@needs_fashion_mnist
def test_fashion_pairs_on_fashion_mnist():
    d = load_data('fashion-pairs', n_train=2500, seed=0)
    assert d.x_train.shape == (2500, 2, 28, 28) and d.x_val.shape == (5000, 2, 28, 28)
    assert d.x_test.shape == (20000, 2, 28, 28) and d.num_classes == 100
    assert torch.bincount(d.y_train).tolist() == [25] * 100
    assert torch.bincount(d.y_val).tolist() == [50] * 100 and torch.bincount(d.y_test).tolist() == [200] * 100
    again, other = load_data('fashion-pairs', n_train=2500, seed=0), load_data('fashion-pairs', n_train=2500, seed=1)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_train, again.y_train)
    assert not torch.equal(d.x_train, other.x_train)
    assert torch.equal(d.x_test, other.x_test) and torch.equal(d.x_val, other.x_val)
    # the indices behind them: the pairs of pair_splits, the items as the two channels
    xtr, ytr, xte, yte = D._read('fashion_mnist', data_root())
    splits = pair_splits(ytr, yte, 10, n_train=2500, seed=0, n_val=5000)
    first, second = splits['test']
    assert torch.equal(d.x_test, torch.cat([xte[first], xte[second]], 1))
    assert torch.equal(d.y_test, 10 * yte[first] + yte[second])
    # each of the 10,000 test images is the first item of two test pairs and the second item of two
    assert torch.bincount(first, minlength=10000).tolist() == [2] * 10000
    assert torch.bincount(second, minlength=10000).tolist() == [2] * 10000
    # the validation pairs are Fashion-MNIST's 5,000 held-out images, each once first and once second
    held = stratified_subset(ytr, 5000, VALIDATION_SEED)
    assert torch.equal(splits['val'][0].sort().values, held) and torch.equal(splits['val'][1].sort().values, held)
    assert not set(torch.cat(splits['train']).tolist()) & set(held.tolist())
    assert torch.equal(d.x_train, torch.cat([xtr[splits['train'][0]], xtr[splits['train'][1]]], 1))
    # a smaller test set is a stratified part of the 20,000
    assert torch.bincount(load_data('fashion-pairs', n_train=100, n_test=1000).y_test).tolist() == [10] * 100

@needs_fashion_mnist
def test_kd_i_runs_end_to_end_on_fashion_pairs(tmp_path):
    from isokd.runs import distill
    m = distill(dataset='fashion-pairs', arch='resnet8', teacher_arch='resnet8', epochs=2, teacher_epochs=1,
                n_train=200, teacher_n_train=200, n_test=200, n_val=200, batch_size=50, mixup='mixup',
                calibration='isotonic', device='cpu', out_dir=str(tmp_path/'kd'), progress=False)
    assert m['finished'] and m['method'] == 'KD-i' and len(m['history']) == 2
    assert 'test_acc' in m['history'][-1] and 'val_acc' in m['history'][-1]
    assert len(m['data_sha256']) == 4
    student = torch.load(tmp_path/'kd'/'model.pt', weights_only=True)
    assert student['fc.weight'].shape[0] == 100 and student['stem.0.weight'].shape[1] == 2

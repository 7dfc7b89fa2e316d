"Datasets by name, offline data, subsets and the device batch pipeline."
import gzip
import shutil

import pytest
import torch

import isokd.data as D
from isokd.data import load_data, DeviceLoader, random_crop_flip, stratified_subset, read_idx

def test_fashion_mnist_is_whole_and_native():
    "The embedded default, one grey channel at 28x28; `make setup` installs Debian's dataset-fashion-mnist."
    d = load_data('fashion_mnist', n_val=0)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    # by default 5,000 training images are held out for validation
    split = load_data('fashion_mnist')
    assert len(split.y_train) == 55000 and split.x_val.shape == (5000, 1, 28, 28)
    assert d.x_train.dtype == torch.uint8 and d.num_classes == 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    pixels = d.x_train.float() / 255
    assert abs(pixels.mean() - d.mean[0]) < 2e-3 and abs(pixels.std() - d.std[0]) < 2e-3

def test_validation_split_is_held_out_of_every_training_subset():
    d = load_data('fashion_mnist', n_train=2000, n_val=1000, seed=1)
    assert len(d.y_val) == 1000 and torch.bincount(d.y_val).tolist() == [100] * 10
    train = {bytes(x.numpy()) for x in d.x_train}
    assert not train & {bytes(x.numpy()) for x in d.x_val}
    assert torch.equal(load_data('fashion_mnist', n_train=500, n_val=1000, seed=2).x_val, d.x_val)

def test_fashion_mnist_torchvision_layout(tmp_path, monkeypatch):
    raw = tmp_path/'FashionMNIST'/'raw'
    raw.mkdir(parents=True)
    for f in D.DEBIAN_FASHION_MNIST.glob('t10k-*.gz'):
        shutil.copy(f, raw/f.name)     # gzipped ...
    for f in D.DEBIAN_FASHION_MNIST.glob('train-*.gz'):                               # ... and plain
        (raw/f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    monkeypatch.setattr(D, 'DEBIAN_FASHION_MNIST', tmp_path/'absent')
    d = load_data('fashion_mnist', root=tmp_path, n_train=100, n_test=50)
    assert d.x_train.shape == (100, 1, 28, 28) and d.x_test.shape == (50, 1, 28, 28)

def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(D, 'DEBIAN_FASHION_MNIST', tmp_path/'absent')
    with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist'):
        load_data('fashion_mnist', root=tmp_path)

def test_data_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(D, 'DEBIAN_FASHION_MNIST', tmp_path/'absent')
    monkeypatch.setenv('ISOKD_DATA', str(tmp_path/'mydata'))
    with pytest.raises(FileNotFoundError, match=str(tmp_path/'mydata'/'FashionMNIST'/'raw')):
        load_data('fashion_mnist')

def test_offline_cifar_says_where_to_put_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'cifar-100-python.tar.gz.*{tmp_path}'):
        load_data('cifar100', root=tmp_path)

def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="'cifar100', 'cifar10', 'fashion_mnist', 'synthetic'"):
        load_data('mnist')

def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path/'x').write_bytes(b'\x00\x00\x0d\x01' + bytes(8))
    with pytest.raises(ValueError, match='not an IDX file of unsigned bytes'):
        read_idx(tmp_path/'x')

def test_stratified_subset_is_seeded_and_proportional():
    y = torch.randint(0, 7, (5000,), generator=torch.Generator().manual_seed(0))
    i = stratified_subset(y, 700, seed=3)
    assert len(i) == len(set(i.tolist())) == 700
    expected = torch.bincount(y).double() * 700 / 5000
    assert (torch.bincount(y[i], minlength=7) - expected).abs().max() <= 1
    assert torch.equal(i, stratified_subset(y, 700, seed=3))

def test_crop_is_a_shift_of_the_padded_image():
    x = torch.randint(1, 255, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(0))
    xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for o, p in zip(out, xp):
        ok = any(torch.equal(o, c) or torch.equal(o, c.flip(-1))
                 for dy in range(9) for dx in range(9) for c in [p[:, dy:dy + 32, dx:dx + 32]])
        assert ok
    assert 0 < sum(not torch.equal(o, i) for o, i in zip(out, x))

def test_loader_normalises_and_is_reproducible_per_epoch():
    d = load_data('synthetic')
    dl = DeviceLoader(d.x_train, d.y_train, 128, d.mean, d.std, train=True, seed=5, channels_last=True)
    a = [b[0] for b in dl]
    assert a[0].is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(u, v) for u, v in zip(a, [b[0] for b in dl]))
    ev = DeviceLoader(d.x_test, d.y_test, 1000, d.mean, d.std)
    x = next(iter(ev))[0]
    ref = (d.x_test.float() / 255 - torch.tensor(d.mean).view(1, 3, 1, 1)) / torch.tensor(d.std).view(1, 3, 1, 1)
    assert torch.allclose(x, ref, atol=1e-5)

def test_each_rank_draws_its_own_crops_and_flips():
    "Identical images on two ranks: the same generator state would give both the same crops; each rank has its own."
    x = torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8).expand(64, -1, -1, -1).clone()
    y = torch.zeros(64).long()
    def loader(**kw): return DeviceLoader(x, y, 16, (0.5,) * 3, (0.25,) * 3, train=True, seed=3, **kw)
    first = [next(iter(loader(rank=r, world_size=2)))[0] for r in (0, 1)]
    assert not torch.equal(first[0], first[1])
    assert torch.equal(next(iter(loader()))[0], next(iter(loader()))[0])

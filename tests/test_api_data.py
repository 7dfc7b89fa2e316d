"Your own images through the public API: `register_dataset`, `read_image_folder`, then `load_data` and a teacher run."
import json

import pytest
import torch
from PIL import Image

from isokd.config import KDConfig, TeacherConfig
from isokd.data import BUILTIN_DATASETS, DATASETS, DeviceLoader, load_data, read_image_folder, register_dataset
from isokd.models import MODELS, create_model
from isokd.runs import train_teacher

CLASSES = {'circle': (200, 40, 40), 'square': (40, 200, 40), 'stripe': (40, 40, 200)}


@pytest.fixture
def registered():
    "Names registered by a test, removed from `DATASETS` after it."
    names = []
    yield names
    for name in names:
        DATASETS.pop(name, None)


def random_split(n, channels=3, size=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g), torch.arange(n) % classes


def write_image_folder(root, n_train=10, n_test=4, size=16, seed=0):
    "An ImageFolder tree of 16x16 RGB PNGs: one noisy colour per class, `n_train` and `n_test` images per class."
    g = torch.Generator().manual_seed(seed)
    for split, n in (('train', n_train), ('test', n_test)):
        for name, colour in CLASSES.items():
            (root/split/name).mkdir(parents=True)
            for k in range(n):
                noise = torch.randint(-30, 31, (size, size, 3), generator=g)
                pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels, 'RGB').save(root/split/name/f'{k:03d}.png')
    return root


def test_registered_tensors_load_and_validate_in_configs(registered):
    train, test = random_split(24), random_split(9, seed=1)
    registered.append('api-tensors')
    d = register_dataset('api-tensors', train, test)
    assert d.x_train.dtype == torch.uint8 and d.x_train.shape == (24, 3, 16, 16)
    assert torch.equal(load_data('api-tensors').x_test, test[0])
    assert d.num_classes == 3 and d.pad == 2 and len(d.mean) == len(d.std) == 3
    assert 'api-tensors' in DATASETS
    assert TeacherConfig(dataset='api-tensors').dataset == 'api-tensors'
    assert KDConfig(dataset='api-tensors', teacher_arch='resnet8').dataset == 'api-tensors'
    # floats in [0, 1] are stored as the uint8 images they stand for
    floats = (train[0].float() / 255, train[1])
    assert torch.equal(register_dataset('api-tensors', floats, test).x_train, train[0])


def test_image_folder_trains_a_teacher(tmp_path, registered):
    train, test, classes = read_image_folder(write_image_folder(tmp_path/'images'))
    assert classes == sorted(CLASSES)
    assert train[0].shape == (30, 3, 16, 16) and test[0].shape == (12, 3, 16, 16)
    assert torch.equal(torch.bincount(train[1]), torch.tensor([10, 10, 10]))
    registered.append('api-folder')
    register_dataset('api-folder', train, test, num_classes=len(classes))
    out = tmp_path/'teacher'
    metrics = train_teacher(dataset='api-folder', arch='resnet8', epochs=1, batch_size=16, device='cpu',
                            out_dir=str(out), progress=False)
    assert metrics['finished'] and len(metrics['history']) == 1
    assert metrics['params']['dataset'] == 'api-folder'
    assert 0 <= metrics['test_acc_last'] <= 1
    assert (out/'model.pt').is_file()
    assert json.loads((out/'metrics.json').read_text())['finished']


def test_grey_images_with_one_channel_models(registered):
    registered.append('api-grey')
    d = register_dataset('api-grey', random_split(12, channels=1, size=28), random_split(6, channels=1, size=28),
                         to_rgb=False)
    assert d.x_train.shape == (12, 1, 28, 28) and len(d.mean) == 1
    images, labels, _ = next(iter(DeviceLoader(d.x_train, d.y_train, 4, d.mean, d.std, train=True, pad=d.pad)))
    for arch in ('resnet8', 'wrn_16_1', 'ShuffleNetV2'):
        logits = create_model(arch, d.num_classes, in_channels=1).eval()(images)
        assert logits.shape == (4, 3)
    # by default grey images are repeated to the three channels the runs' models take
    rgb = register_dataset('api-grey', random_split(12, channels=1), random_split(6, channels=1))
    assert rgb.x_train.shape == (12, 3, 16, 16)
    assert torch.equal(rgb.x_train[:, 0], rgb.x_train[:, 2])
    assert len(MODELS) == 27


@pytest.mark.parametrize('name', BUILTIN_DATASETS)
def test_builtin_names_cannot_be_taken(name):
    before = DATASETS[name]
    with pytest.raises(ValueError, match=f"'{name}' is a built-in dataset"):
        register_dataset(name, random_split(6), random_split(3))
    assert DATASETS[name] is before


@pytest.mark.parametrize('train, test, message', [
    (random_split(6), (random_split(3)[0], torch.arange(2)), 'test has 3 images but 2 labels'),
    ((random_split(6)[0], torch.arange(7) % 3), random_split(3), 'train has 6 images but 7 labels'),
    ((random_split(6)[0], torch.tensor([0, 1, 2, 0, 1, -1])), random_split(3), 'found -1'),
    ((random_split(6)[0], torch.tensor([0, 1, 2, 0, 1, 1.0])), random_split(3), 'tensor of integers'),
    ((random_split(6)[0].float(), random_split(6)[1]), random_split(3), 'floats must lie in [0, 1]'),
    (random_split(6), random_split(3, size=32), 'they must match'),
    ([random_split(6)[0]], random_split(3), 'must be a pair (images, labels)'),
])
def test_bad_images_or_labels_are_refused(train, test, message):
    with pytest.raises(ValueError) as error:
        register_dataset('api-bad', train, test)
    assert message in str(error.value)
    assert 'api-bad' not in DATASETS


def test_labels_outside_num_classes(registered):
    with pytest.raises(ValueError, match=r'test labels must lie in 0\.\.1 \(num_classes=2\), found 2'):
        register_dataset('api-bad', random_split(6, classes=2), random_split(3), num_classes=2)
    assert 'api-bad' not in DATASETS


def test_unknown_names_list_the_registered_ones(registered):
    registered.append('api-known')
    register_dataset('api-known', random_split(6), random_split(3))
    with pytest.raises(ValueError, match="'api-known'"):
        load_data('api-unknown')
    with pytest.raises(ValueError, match='api-unknown'):
        TeacherConfig(dataset='api-unknown')


def test_image_folder_errors(tmp_path):
    root = write_image_folder(tmp_path/'images', n_train=2, n_test=1)
    Image.new('RGB', (20, 16)).save(root/'train'/'circle'/'wide.png')
    with pytest.raises(ValueError, match='pass size= to resize'):
        read_image_folder(root)
    train, test, _ = read_image_folder(root, size=12, grey=True)
    assert train[0].shape == (7, 1, 12, 12) and test[0].shape == (3, 1, 12, 12)
    with pytest.raises(FileNotFoundError, match='test/<class>/<image>'):
        read_image_folder(root/'train')

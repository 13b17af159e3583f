"""Regenerate the spoken-digit audio features shipped with AV-Digits (``avdigits_audio.npz``).

Speaks "zero" .. "nine" with espeak-ng over a fixed grid (English base voices x voice
variants x speeds x pitches), resamples each clip to 16 kHz, computes a log-mel spectrogram
with torchaudio (``MelSpectrogram``: 40 HTK mel bands, 25 ms Hann window, 10 ms hop),
trims leading and
trailing silence, and pools each clip into one fixed-length vector:

    mean (40) | std (40) | means of 4 equal time segments of the mean-removed log-mel (160)

A "voice" (the group that held-out test voices are drawn from) is one base voice with one
variant, e.g. ``en-gb-scotland+f2``; speed and pitch vary within a voice.

The grid is fixed and walked in order, there is no randomness, and the .npz is written with
fixed zip timestamps, so a rerun with the same espeak-ng, torch and torchaudio gives the same
bytes. The script prints the file's sha256 (paste it into ``AUDIO_SHA256`` in
``rlmba_env/data/avdigits.py``) and the logistic-regression accuracy on held-out voices.

Usage::

    python scripts/make_avdigits_audio.py [--out rlmba_env/data/avdigits_audio.npz] [--workers 2]

Needs ``espeak-ng`` on the PATH (Debian: ``apt-get install espeak-ng``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "rlmba_env" / "data" / "avdigits_audio.npz"

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# espeak-ng's own English voices (`espeak-ng --voices=en`); "en" and "en-us-nyc" are left
# out because they speak the digits identically to en-gb and en-us, and the mbrola voices
# need a separate install.
BASE_VOICES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
               "en-gb-x-gbcwmd", "en-029")
# "" is the base voice unchanged; the rest are files under espeak-ng-data/voices/!v.
VARIANTS = ("", "m1", "m2", "m3", "m6", "m7", "f1", "f2", "f4", "f5", "croak", "klatt",
            "whisper", "Annie")
SPEEDS = (140, 190)  # words per minute (espeak-ng -s)
PITCHES = (35, 70)  # 0..99 (espeak-ng -p)

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
LOG_EPS = 1e-6
TRIM_DB = 40.0  # frames quieter than the loudest frame by more than this are silence
N_SEGMENTS = 4


@dataclass(frozen=True)
class Clip:
    base: str
    variant: str
    speed: int
    pitch: int
    digit: int

    @property
    def voice(self) -> str:
        return f"{self.base}+{self.variant}" if self.variant else self.base


def grid() -> list[Clip]:
    """Every clip, in the fixed order the features are stored in."""
    return [Clip(b, v, s, p, d) for b in BASE_VOICES for v in VARIANTS for s in SPEEDS
            for p in PITCHES for d in range(len(WORDS))]


def settings() -> dict:
    return {
        "synthesizer": espeak_version(),
        "words": list(WORDS),
        "grid": {"base_voices": list(BASE_VOICES), "variants": list(VARIANTS),
                 "speeds_wpm": list(SPEEDS), "pitches": list(PITCHES),
                 "order": "base, variant, speed, pitch, digit"},
        "sample_rate": SAMPLE_RATE,
        "resample": "torchaudio.functional.resample from espeak-ng's native rate",
        "mel": {"n_fft": N_FFT, "win_length": N_FFT, "hop_length": HOP, "window": "hann",
                "n_mels": N_MELS, "f_min": 0.0, "f_max": SAMPLE_RATE / 2, "mel_scale": "htk",
                "power": 2.0, "center": True, "log": f"log(mel + {LOG_EPS})"},
        "trim_db": TRIM_DB,
        "pooling": f"mean({N_MELS}) | std({N_MELS}) | "
                   f"{N_SEGMENTS} time-segment means of (logmel - clip mean) ({N_SEGMENTS * N_MELS})",
        "dtype": "float16",
    }


def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True)
    return out.stdout.split(" Data at:")[0].strip()


_MEL: torchaudio.transforms.MelSpectrogram | None = None


def log_mel(wave: torch.Tensor) -> np.ndarray:
    """(frames, n_mels) log-mel spectrogram of a 16 kHz float32 waveform."""
    global _MEL
    if _MEL is None:
        _MEL = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT, hop_length=HOP, n_mels=N_MELS,
            f_min=0.0, f_max=SAMPLE_RATE / 2, power=2.0, center=True, mel_scale="htk")
    return torch.log(_MEL(wave) + LOG_EPS).T.numpy()


def pool_clip(logmel: np.ndarray) -> np.ndarray:
    """Trim silence and pool a (frames, n_mels) log-mel into one fixed-length vector."""
    energy_db = 10.0 * np.log10(np.exp(logmel.astype(np.float64)).sum(axis=1))
    loud = np.flatnonzero(energy_db > energy_db.max() - TRIM_DB)
    m = logmel[loud[0] : loud[-1] + 1].astype(np.float64)
    if m.shape[0] < N_SEGMENTS:  # too short to split: repeat frames so every segment has one
        m = np.repeat(m, N_SEGMENTS, axis=0)
    mean = m.mean(axis=0)
    segments = [s.mean(axis=0) for s in np.array_split(m - mean, N_SEGMENTS)]
    return np.concatenate([mean, m.std(axis=0), *segments])


def featurize(clip: Clip) -> np.ndarray:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="avdigits_") as tmp:
        path = os.path.join(tmp, "clip.wav")
        subprocess.run(["espeak-ng", "-v", clip.voice, "-s", str(clip.speed), "-p", str(clip.pitch),
                        "-w", path, WORDS[clip.digit]], check=True, capture_output=True)
        wave, sr = sf.read(path, dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    if not np.any(wave):
        raise RuntimeError(f"espeak-ng produced silence for {clip}")
    wave = torchaudio.functional.resample(torch.from_numpy(wave), sr, SAMPLE_RATE)
    return pool_clip(log_mel(wave))


def save_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed``, but with fixed zip timestamps so reruns give equal bytes."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
    os.replace(tmp, path)


def held_out_voice_accuracy(features, labels, voice, fraction=0.2, seeds=(0, 1, 2)) -> list[float]:
    """Logistic-regression test accuracy with a random ``fraction`` of voices held out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features.astype(np.float32)
    voices = np.unique(voice)
    accs = []
    for seed in seeds:
        test_voices = np.random.default_rng(seed).choice(voices, round(fraction * voices.size),
                                                         replace=False)
        test = np.isin(voice, test_voices)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(x[~test], labels[~test])
        accs.append(float(clf.score(x[test], labels[test])))
    return accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the .npz")
    parser.add_argument("--workers", type=int, default=2, help="parallel espeak-ng processes")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found on PATH; install it (Debian: apt-get install espeak-ng)")

    clips = grid()
    voice_names = list(dict.fromkeys(c.voice for c in clips))
    t0 = time.time()
    with Pool(args.workers) as pool:
        feats = pool.map(featurize, clips, chunksize=20)
    features = np.stack(feats).astype(np.float16)
    if not np.isfinite(features).all():
        raise RuntimeError("non-finite audio features (float16 overflow?)")
    labels = np.array([c.digit for c in clips], dtype=np.int64)
    voice = np.array([voice_names.index(c.voice) for c in clips], dtype=np.int64)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_npz_deterministic(args.out, {
        "features": features,
        "labels": labels,
        "voice": voice,
        "voice_names": np.array(voice_names, dtype=f"<U{max(map(len, voice_names))}"),
        "settings_json": np.array(json.dumps(settings(), sort_keys=True)),
    })
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    accs = held_out_voice_accuracy(features, labels, voice)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s")
    print(f"clips={len(clips)} dim={features.shape[1]} voices={len(voice_names)}")
    print(f"held-out-voice logistic regression accuracy (20% voices, 3 draws): "
          f"{np.mean(accs):.3f} {[round(a, 3) for a in accs]}")
    print(f"sha256 {digest}")


if __name__ == "__main__":
    main()
